//! What people and the log see of a call's arguments: a redacted copy and a keyed digest.
//!
//! Owns: `Redactor` (pointers with `*` and `**`), `ArgsKey` (`<data_dir>/args-key`, the
//! HMAC key of argument digests) and `ArgsHmac`, the digest everything shown carries.
//! Uses: `canonical`, ring's HMAC-SHA256 and random generator.
//! Must not: hand out the key, or a plain SHA-256 of arguments for display or storage.
//!
//! Why keyed: a plain SHA-256 of the arguments lets anyone who sees it try every value of a
//! redacted low-entropy field (a 4-digit PIN falls in milliseconds). HMAC-SHA256 under a
//! key only this gateway holds binds the exact arguments just as well, and cannot be
//! searched without the key.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use ring::rand::SecureRandom;
use serde_json::Value;

use super::AuditError;
use super::canonical::canonical;
use super::digest::Sha256Digest;
use super::keys::{NewFiles, write_secret};

/// The text that replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// The pointers redacted when `[audit] redact` is not set: these names at any depth.
pub const DEFAULT_REDACT: [&str; 4] = ["**/password", "**/token", "**/secret", "**/api_key"];

/// File name of the argument-digest key inside the data directory.
pub const ARGS_KEY_FILE: &str = "args-key";

/// The HMAC key of argument digests: 32 random bytes, made on first start, mode 0600.
#[derive(Clone)]
pub struct ArgsKey(Arc<ring::hmac::Key>);

impl fmt::Debug for ArgsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArgsKey(…)")
    }
}

impl ArgsKey {
    /// A fresh random key (tests, and the first start).
    pub fn generate() -> Result<ArgsKey, AuditError> {
        Ok(ArgsKey::from_bytes(&random_bytes()?))
    }

    fn from_bytes(bytes: &[u8]) -> ArgsKey {
        ArgsKey(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes)))
    }

    /// Loads `path`, or creates it (mode 0600, durable) when there is none.
    pub fn load_or_create(path: &Path) -> Result<ArgsKey, AuditError> {
        let mut created = NewFiles::default();
        let key = ArgsKey::load_or_create_in(path, &mut created)?;
        created.sync()?;
        Ok(key)
    }

    /// As `load_or_create`, but a new key file is durable only once `created` is synced.
    pub(crate) fn load_or_create_in(path: &Path, created: &mut NewFiles) -> Result<ArgsKey, AuditError> {
        let io = |e| AuditError::io(path, e);
        match fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                if fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                    tracing::warn!(path = %path.display(), "argument-digest key is readable by others; chmod 600 it");
                }
                Ok(ArgsKey::from_bytes(&bytes))
            }
            Ok(_) => Err(AuditError::BadArgsKey(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_bytes()?;
                created.add(path, write_secret(path, &bytes)?);
                tracing::info!(path = %path.display(), "created argument-digest key");
                Ok(ArgsKey::from_bytes(&bytes))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// HMAC-SHA256 of the canonical form of `args`.
    pub fn digest(&self, args: &Value) -> ArgsHmac {
        let tag = ring::hmac::sign(&self.0, &canonical(args));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        ArgsHmac(Sha256Digest::from_bytes(out))
    }
}

fn random_bytes() -> Result<[u8; 32], AuditError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| AuditError::KeyGeneration)?;
    Ok(bytes)
}

/// HMAC-SHA256 (key `args-key`) of the canonical arguments: what approvers, chat and the log
/// see, and what a hold is bound to. 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ArgsHmac(Sha256Digest);

impl ArgsHmac {
    /// The 32 bytes as a digest value (records store it in that form).
    pub const fn as_digest(&self) -> Sha256Digest {
        self.0
    }
}

impl fmt::Display for ArgsHmac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One compiled pointer segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// A key of an object, or an index of an array.
    Name(String),
    /// `*`: every member of one level.
    One,
    /// `**`: any number of levels, none included.
    Any,
}

/// Replaces the values at configured pointers with `"[redacted]"`. A pointer is an RFC 6901
/// JSON pointer whose segments may also be `*` (every member of one level) or `**` (any
/// depth, none included); a pointer may start with `**/` instead of `/`.
#[derive(Debug, Clone)]
pub struct Redactor {
    pointers: Vec<Vec<Segment>>,
    key: ArgsKey,
}

impl Redactor {
    /// Checks and compiles the pointers; digests are keyed with `key`.
    pub fn new(pointers: &[String], key: ArgsKey) -> Result<Redactor, AuditError> {
        let pointers = pointers.iter().map(|p| compile(p)).collect::<Result<_, _>>()?;
        Ok(Redactor { pointers, key })
    }

    /// Whether `pointer` is one `new` accepts (for `airlock check`).
    pub fn check(pointer: &str) -> Result<(), AuditError> {
        compile(pointer).map(drop)
    }

    /// A copy of `value` with every configured pointer replaced.
    pub fn redact(&self, value: &Value) -> Value {
        let mut out = value.clone();
        for pointer in &self.pointers {
            redact_at(&mut out, pointer);
        }
        out
    }

    /// The keyed digest of `args` (see the module doc for why it is keyed).
    pub fn digest(&self, args: &Value) -> ArgsHmac {
        self.key.digest(args)
    }
}

fn compile(pointer: &str) -> Result<Vec<Segment>, AuditError> {
    let bad = || AuditError::BadRedaction(pointer.to_owned());
    let rest = if pointer.is_empty() {
        return Ok(Vec::new());
    } else if let Some(rest) = pointer.strip_prefix('/') {
        rest
    } else if pointer == "**" || pointer.starts_with("**/") {
        pointer
    } else {
        return Err(bad());
    };
    rest.split('/')
        .map(|s| match s {
            "*" => Ok(Segment::One),
            "**" => Ok(Segment::Any),
            _ if has_bad_escape(s) => Err(bad()),
            _ => Ok(Segment::Name(s.replace("~1", "/").replace("~0", "~"))),
        })
        .collect()
}

fn has_bad_escape(segment: &str) -> bool {
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return true;
        }
    }
    false
}

fn redact_at(value: &mut Value, path: &[Segment]) {
    let Some((first, rest)) = path.split_first() else {
        *value = Value::String(REDACTED.to_owned());
        return;
    };
    match (first, value) {
        (Segment::Any, value) => {
            // Deeper levels first: once `rest` matches here the value may be a string.
            match value {
                Value::Object(map) => map.values_mut().for_each(|v| redact_at(v, path)),
                Value::Array(items) => items.iter_mut().for_each(|v| redact_at(v, path)),
                _ => {}
            }
            redact_at(value, rest);
        }
        (Segment::One, Value::Object(map)) => map.values_mut().for_each(|v| redact_at(v, rest)),
        (Segment::One, Value::Array(items)) => items.iter_mut().for_each(|v| redact_at(v, rest)),
        (Segment::Name(name), Value::Object(map)) => {
            if let Some(v) = map.get_mut(name.as_str()) {
                redact_at(v, rest);
            }
        }
        (Segment::Name(name), Value::Array(items)) => {
            if let Some(v) = name.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                redact_at(v, rest);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor(pointers: &[&str]) -> Redactor {
        let pointers: Vec<String> = pointers.iter().map(|p| (*p).to_owned()).collect();
        Redactor::new(&pointers, ArgsKey::generate().unwrap()).unwrap()
    }

    #[test]
    fn absolute_and_one_level_pointers_replace_what_they_name() {
        let r = redactor(&["/password", "/nested/*/token", "/a~1b"]);
        let args = json!({"password": "hunter2", "user": "bob", "nested": [{"token": "t1"}, {"x": 1}], "a/b": 5});
        assert_eq!(
            r.redact(&args),
            json!({"password": "[redacted]", "user": "bob", "nested": [{"token": "[redacted]"}, {"x": 1}], "a/b": "[redacted]"})
        );
    }

    #[test]
    fn double_star_matches_at_any_depth_including_the_top() {
        let r = redactor(&DEFAULT_REDACT);
        let args = json!({
            "password": "top",
            "auth": {"password": "p1", "user": "u"},
            "list": [{"password": "p2"}, {"deep": {"api_key": "k", "token": ["a", "b"]}}],
            "secret": {"inner": 1},
            "keep": "passwords"
        });
        assert_eq!(
            r.redact(&args),
            json!({
                "password": "[redacted]",
                "auth": {"password": "[redacted]", "user": "u"},
                "list": [{"password": "[redacted]"}, {"deep": {"api_key": "[redacted]", "token": "[redacted]"}}],
                "secret": "[redacted]",
                "keep": "passwords"
            })
        );
    }

    #[test]
    fn double_star_in_the_middle_matches_nested_members() {
        let r = redactor(&["/headers/**/value"]);
        let args = json!({"headers": [{"value": 1}, {"x": {"value": 2}}], "value": 3});
        assert_eq!(r.redact(&args), json!({"headers": [{"value": "[redacted]"}, {"x": {"value": "[redacted]"}}], "value": 3}));
    }

    #[test]
    fn pointers_that_are_not_pointers_are_refused() {
        for bad in ["password", "*/password", "/a~2", "**x/y"] {
            assert!(Redactor::check(bad).is_err(), "{bad}");
        }
        for good in ["", "/a", "**/a", "/**/a", "/*/a", "**"] {
            assert!(Redactor::check(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn digest_is_keyed_and_tells_arguments_apart() {
        let args = json!({"pin": "1234"});
        let (a, b) = (redactor(&[]), redactor(&[]));
        assert_ne!(a.digest(&args), b.digest(&args), "another key, another digest");
        assert_eq!(a.digest(&args), a.digest(&args));
        assert_ne!(a.digest(&args), a.digest(&json!({"pin": "1235"})));
        assert_ne!(a.digest(&args).as_digest(), Sha256Digest::of(&canonical(&args)));
    }

    #[test]
    fn key_file_is_made_once_with_mode_0600_and_read_back() {
        let dir = std::env::temp_dir().join(format!("airlock-argskey-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(ARGS_KEY_FILE);
        let first = ArgsKey::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = ArgsKey::load_or_create(&path).unwrap();
        let args = json!({"a": 1});
        assert_eq!(first.digest(&args), again.digest(&args));
        fs::write(&path, b"short").unwrap();
        assert!(matches!(ArgsKey::load_or_create(&path), Err(AuditError::BadArgsKey(_))));
        let _ = fs::remove_dir_all(&dir);
    }
}
