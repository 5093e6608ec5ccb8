//! Argument validation: a call's arguments against its tool's `inputSchema` (DESIGN.md §4
//! step 3).
//!
//! Owns: `SchemaCache` (one compiled validator per tool, rebuilt when the tool's schema
//! changes, dropped by `clear` when the catalog changes) and `ArgumentError`.
//! Uses: jsonschema (no remote retrieval: `default-features = false`), serde_json.
//! Must not: forward, decide or log; it answers "valid" or "not valid, here is where".
//!
//! A schema that cannot be compiled (malformed, or a `$ref` that cannot be resolved
//! offline) fails closed: every call to that tool is refused with `UnusableSchema`.
//! Messages never echo the argument values (they may be secrets): jsonschema's masked
//! messages are used.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use jsonschema::Validator;
use serde_json::{Map, Value};

/// A tool's `inputSchema`, as rmcp holds it.
pub type JsonObject = Map<String, Value>;

/// Why a call's arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentError {
    /// Invalid arguments, or a schema that cannot be used.
    pub kind: ArgumentErrorKind,
    /// JSON pointer to the failing argument (`""` = the arguments object itself).
    pub pointer: String,
    /// The schema keyword that failed (`type`, `required`, `pattern`, …).
    pub rule: String,
    /// What is wrong, without the argument's value.
    pub message: String,
}

/// The two ways validation refuses a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgumentErrorKind {
    /// The arguments do not satisfy the schema.
    Invalid,
    /// The tool's schema cannot be compiled; calls fail closed.
    UnusableSchema,
}

impl fmt::Display for ArgumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ArgumentErrorKind::Invalid => {
                let at = if self.pointer.is_empty() {
                    "the arguments"
                } else {
                    &self.pointer
                };
                write!(
                    f,
                    "invalid arguments at {at}: {} (schema rule \"{}\")",
                    self.message, self.rule
                )
            }
            ArgumentErrorKind::UnusableSchema => write!(
                f,
                "the tool's input schema cannot be used, so the call is refused: {}",
                self.message
            ),
        }
    }
}

impl std::error::Error for ArgumentError {}

struct Entry {
    schema: Arc<JsonObject>,
    compiled: Result<Arc<Validator>, String>,
}

/// Compiled validators, one per exposed tool name.
#[derive(Default)]
pub struct SchemaCache {
    entries: RwLock<HashMap<String, Entry>>,
}

impl fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaCache")
            .field("tools", &self.len())
            .finish()
    }
}

impl SchemaCache {
    /// An empty cache.
    pub fn new() -> SchemaCache {
        SchemaCache::default()
    }

    /// Validates `args` (pass `{}` when the client sent none) against `schema`, the current
    /// `inputSchema` of `tool`. Compiles on first use and whenever the schema differs from
    /// the one compiled before.
    pub fn validate(
        &self,
        tool: &str,
        schema: &Arc<JsonObject>,
        args: &Value,
    ) -> Result<(), ArgumentError> {
        let validator = self.validator(tool, schema)?;
        match validator.iter_errors(args).next() {
            None => Ok(()),
            Some(error) => Err(ArgumentError {
                kind: ArgumentErrorKind::Invalid,
                pointer: error.instance_path.as_str().to_string(),
                rule: error
                    .schema_path
                    .as_str()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                message: error.masked_with("value").to_string(),
            }),
        }
    }

    /// Drops every compiled validator (call when the catalog changes).
    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How many tools have a compiled (or failed) entry.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn validator(
        &self,
        tool: &str,
        schema: &Arc<JsonObject>,
    ) -> Result<Arc<Validator>, ArgumentError> {
        {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            let same = |e: &&Entry| Arc::ptr_eq(&e.schema, schema) || e.schema == *schema;
            if let Some(entry) = entries.get(tool).filter(same) {
                return entry.compiled.clone().map_err(unusable);
            }
        }
        // Compiled outside the lock; two callers racing on a new schema both compile, and
        // the second insert wins. Both results are equivalent.
        let compiled = jsonschema::validator_for(&Value::Object((**schema).clone()))
            .map(Arc::new)
            .map_err(|e| e.masked_with("value").to_string());
        let entry = Entry {
            schema: Arc::clone(schema),
            compiled: compiled.clone(),
        };
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tool.to_string(), entry);
        compiled.map_err(unusable)
    }
}

fn unusable(message: String) -> ArgumentError {
    ArgumentError {
        kind: ArgumentErrorKind::UnusableSchema,
        pointer: String::new(),
        rule: "schema".to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Arc<JsonObject> {
        match v {
            Value::Object(m) => Arc::new(m),
            _ => panic!("schema must be an object"),
        }
    }

    /// The shape `@modelcontextprotocol/server-filesystem` gives `write_file` (zod → draft-07).
    fn fs_write_file() -> Arc<JsonObject> {
        schema(json!({
            "type": "object",
            "properties": { "path": { "type": "string" }, "content": { "type": "string" } },
            "required": ["path", "content"],
            "additionalProperties": false,
            "$schema": "http://json-schema.org/draft-07/schema#"
        }))
    }

    #[test]
    fn the_cache_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<SchemaCache>();
    }

    #[test]
    fn valid_arguments_pass_and_the_validator_is_compiled_once() {
        let cache = SchemaCache::new();
        let s = fs_write_file();
        let args = json!({"path": "/srv/data/a.txt", "content": "hi"});
        assert_eq!(cache.validate("fs__write_file", &s, &args), Ok(()));
        assert_eq!(cache.validate("fs__write_file", &s, &args), Ok(()));
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_wrong_type_names_the_pointer_and_rule_without_the_value() {
        let cache = SchemaCache::new();
        let err = cache
            .validate(
                "fs__write_file",
                &fs_write_file(),
                &json!({"path": "/x", "content": "secret-123".len()}),
            )
            .unwrap_err();
        assert_eq!(
            (err.kind, err.pointer.as_str(), err.rule.as_str()),
            (ArgumentErrorKind::Invalid, "/content", "type")
        );
        assert!(!err.to_string().contains("10"), "{err}");
    }

    #[test]
    fn missing_and_extra_arguments_are_refused() {
        let cache = SchemaCache::new();
        let s = fs_write_file();
        let err = cache.validate("t", &s, &json!({"path": "/x"})).unwrap_err();
        assert_eq!((err.pointer.as_str(), err.rule.as_str()), ("", "required"));
        let err = cache
            .validate("t", &s, &json!({"path": "/x", "content": "", "mode": 7}))
            .unwrap_err();
        assert_eq!(err.rule, "additionalProperties");
    }

    #[test]
    fn a_changed_schema_is_recompiled() {
        let cache = SchemaCache::new();
        let loose = schema(json!({"type": "object"}));
        let strict = schema(json!({"type": "object", "required": ["bucket"]}));
        assert!(
            cache
                .validate("demo__delete_bucket", &loose, &json!({}))
                .is_ok()
        );
        assert!(
            cache
                .validate("demo__delete_bucket", &strict, &json!({}))
                .is_err()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_unusable_schema_fails_closed() {
        let cache = SchemaCache::new();
        for bad in [
            json!({"type": 5}),
            json!({"$ref": "https://example.com/remote.json"}),
            json!({"properties": {"a": {"pattern": "("}}}),
        ] {
            let err = cache
                .validate("t", &schema(bad.clone()), &json!({"a": "x"}))
                .unwrap_err();
            assert_eq!(err.kind, ArgumentErrorKind::UnusableSchema, "{bad}");
        }
    }
}
