//! Diagnostics for the TOML files a user writes: problems with file and line, and a
//! deserializer that keeps going after the first mistake.
//!
//! Owns: `Problem`, `ConfigErrors`, byte-offset → line mapping, and `deserialize_all`, which
//! reports every unknown key and mistyped value in a file instead of only the first.
//! Uses: toml_edit (the parser behind toml 0.8, for its spans), serde, strsim.
//! Must not: know any Airlock file format; the raw structs live with their owners.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml_edit::{Item, Table, Value};

/// One problem in one file, shown as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file as the user named it (or as it was found in a configured directory).
    pub file: PathBuf,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Problem {
    /// A problem about a whole file (unreadable, missing).
    pub fn file(file: &Path, message: impl Into<String>) -> Problem {
        Problem {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found in one load; displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    problems: Vec<Problem>,
    /// Spans of keys `deserialize_all` removed after reporting them; a later "missing key"
    /// problem around one of them is a consequence, not news (see `push_missing`).
    removed: Vec<(Range<usize>, String)>,
}

impl ConfigErrors {
    /// No problems yet.
    pub fn new() -> ConfigErrors {
        ConfigErrors::default()
    }
    /// The problems, in the order they were found (file by file, top to bottom).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }
    /// Adds one problem.
    pub fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }
    /// Adds every problem of `other`.
    pub fn extend(&mut self, other: ConfigErrors) {
        self.problems.extend(other.problems);
    }
    /// Adds a "key missing" problem about the table at `span`, unless one of `keys` (or a
    /// near spelling of one) inside it was already reported and removed: a misspelt `idd`,
    /// or an `effect` with an unknown value, should not also cause "needs an id/effect".
    pub fn push_missing(&mut self, span: Range<usize>, keys: &[&str], problem: Problem) {
        let caused = self.removed.iter().any(|(r, name)| {
            span.start <= r.start
                && r.end <= span.end
                && keys
                    .iter()
                    .any(|k| k == name || strsim::jaro_winkler(k, name) >= 0.8)
        });
        if !caused {
            self.problems.push(problem);
        }
    }
    /// Orders the problems by line (stable); for problems of a single file.
    pub fn sort_by_line(&mut self) {
        self.problems.sort_by_key(|p| p.line);
    }
    /// `Ok(value)` when nothing was found, otherwise these problems.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Problem> for ConfigErrors {
    fn from(problem: Problem) -> ConfigErrors {
        ConfigErrors {
            problems: vec![problem],
            removed: Vec::new(),
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A file's text with its name, for turning byte offsets into lines.
#[derive(Debug)]
pub struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl<'a> Source<'a> {
    /// Wraps the text read from `file`.
    pub fn new(file: &'a Path, text: &'a str) -> Source<'a> {
        Source { file, text }
    }

    /// The file name used in problems.
    pub fn file(&self) -> &Path {
        self.file
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        let prefix = self.text.get(..end).unwrap_or(self.text);
        prefix.bytes().filter(|b| *b == b'\n').count() + 1
    }

    /// A problem at `span` (or about the whole file when there is none).
    pub fn problem(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)),
            message: message.into(),
        }
    }

    /// A problem at the position of a `toml::Spanned` value.
    pub fn at<T>(&self, spanned: &toml::Spanned<T>, message: impl Into<String>) -> Problem {
        self.problem(Some(spanned.span()), message)
    }
}

/// Parses `source` and deserializes it into `T`, collecting every problem.
///
/// serde stops at the first error, so after each error the offending key is removed from a
/// copy of the document and deserialization runs again. Raw structs should therefore make
/// every field optional (required keys are checked afterwards, with a position), so that
/// every remaining error is an unknown key or a mistyped value that can be removed.
/// Returns `None` when the document could not be turned into a `T` at all.
pub fn deserialize_all<T: DeserializeOwned>(
    source: &Source<'_>,
    errors: &mut ConfigErrors,
) -> Option<T> {
    let doc = match toml_edit::ImDocument::parse(source.text) {
        Ok(doc) => doc,
        Err(e) => {
            let msg = format!("not valid TOML: {}", first_line(e.message()));
            errors.push(source.problem(e.span(), msg));
            return None;
        }
    };
    let mut root: Table = doc.as_table().clone();
    // Each round removes one key, so the number of rounds is bounded by the key count.
    for _ in 0..=count_keys(&root) {
        let de = toml_edit::de::Deserializer::from(toml_edit::DocumentMut::from(root.clone()));
        match T::deserialize(de) {
            Ok(value) => return Some(value),
            Err(e) => {
                let span = e.span();
                let removed = span.clone().and_then(|s| remove_key_at(&mut root, &s, ""));
                let key = removed.as_deref().unwrap_or("");
                errors.push(source.problem(span.clone(), describe(key, e.message())));
                // A problem that is not at a removable key ends the search.
                let path = removed?;
                if let Some(span) = span {
                    errors.removed.push((span, leaf(&path).to_string()));
                }
            }
        }
    }
    None
}

/// The last key of a dotted path: `rule[2].when./p.regx` → `regx`.
fn leaf(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

fn count_keys(table: &Table) -> usize {
    table.iter().map(|(_, item)| 1 + item_keys(item)).sum()
}

fn item_keys(item: &Item) -> usize {
    match item {
        Item::Table(t) => count_keys(t),
        Item::ArrayOfTables(a) => a.iter().map(count_keys).sum(),
        Item::Value(v) => value_keys(v),
        Item::None => 0,
    }
}

fn value_keys(value: &Value) -> usize {
    match value {
        Value::InlineTable(t) => t.iter().map(|(_, v)| 1 + value_keys(v)).sum(),
        Value::Array(a) => a.iter().map(value_keys).sum(),
        _ => 0,
    }
}

fn contains(outer: &Option<Range<usize>>, inner: &Range<usize>) -> bool {
    outer
        .as_ref()
        .is_some_and(|o| o.start <= inner.start && inner.end <= o.end)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Removes the innermost key whose name or value covers `span`; returns its dotted path.
fn remove_key_at(table: &mut Table, span: &Range<usize>, prefix: &str) -> Option<String> {
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    for key in keys {
        let path = join(prefix, &key);
        let key_span = table.key(&key).and_then(|k| k.span());
        let Some(item) = table.get_mut(&key) else {
            continue;
        };
        if let Some(found) = remove_in_item(item, span, &path) {
            return Some(found);
        }
        if contains(&key_span, span) || contains(&item.span(), span) {
            table.remove(&key);
            return Some(path);
        }
    }
    None
}

fn remove_in_item(item: &mut Item, span: &Range<usize>, path: &str) -> Option<String> {
    match item {
        Item::Table(t) => remove_key_at(t, span, path),
        Item::ArrayOfTables(a) => a
            .iter_mut()
            .enumerate()
            .find_map(|(i, t)| remove_key_at(t, span, &format!("{path}[{}]", i + 1))),
        Item::Value(v) => remove_in_value(v, span, path),
        Item::None => None,
    }
}

fn remove_in_value(value: &mut Value, span: &Range<usize>, path: &str) -> Option<String> {
    match value {
        Value::InlineTable(t) => {
            let keys: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
            for key in keys {
                let child = join(path, &key);
                let key_span = t.key(&key).and_then(|k| k.span());
                let Some(v) = t.get_mut(&key) else { continue };
                if let Some(found) = remove_in_value(v, span, &child) {
                    return Some(found);
                }
                if contains(&key_span, span) || contains(&v.span(), span) {
                    t.remove(&key);
                    return Some(child);
                }
            }
            None
        }
        Value::Array(a) => a
            .iter_mut()
            .enumerate()
            .find_map(|(i, v)| remove_in_value(v, span, &format!("{path}[{}]", i + 1))),
        _ => None,
    }
}

/// Rewrites serde's message into one that names the key and suggests a fix.
fn describe(path: &str, message: &str) -> String {
    let message = first_line(message);
    let leaf = leaf(path);
    if let Some((name, expected)) = parse_serde_list(message, "unknown field `") {
        let hint = suggestion(&name, &expected)
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_else(|| known_list("known keys", &expected));
        return format!("key \"{name}\" is not known{hint}");
    }
    if let Some((name, expected)) = parse_serde_list(message, "unknown variant `") {
        let hint = suggestion(&name, &expected)
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_else(|| known_list("expected one of", &expected));
        return format!("key \"{path}\": \"{name}\" is not a known value{hint}");
    }
    if path.is_empty() || leaf.is_empty() {
        message.to_string()
    } else {
        format!("key \"{path}\": {message}")
    }
}

fn known_list(label: &str, names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        format!(" ({label}: {})", quoted.join(", "))
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into `x` and `[a, b]`.
fn parse_serde_list(message: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    let name = rest[..end].to_string();
    let tail = &rest[end + 1..];
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((name, expected))
}

/// The closest known name, if it is close enough to be a likely typo.
pub fn suggestion(name: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Root {
        audit: Option<Audit>,
        rule: Option<Vec<Audit>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Audit {
        durability: Option<String>,
        redact: Option<Vec<String>>,
    }

    fn problems(text: &str) -> Vec<String> {
        let path = PathBuf::from("airlock.toml");
        let src = Source::new(&path, text);
        let mut errors = ConfigErrors::new();
        let _ = deserialize_all::<Root>(&src, &mut errors);
        errors.problems().iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_line_and_a_suggestion() {
        let got = problems("[audit]\ndurabilty = \"fsync\"\nredcat = []\n[[rule]]\nredact = 5\n");
        assert_eq!(
            got,
            vec![
                "airlock.toml:2: key \"durabilty\" is not known (did you mean \"durability\"?)",
                "airlock.toml:3: key \"redcat\" is not known (did you mean \"redact\"?)",
                "airlock.toml:5: key \"rule[1].redact\": invalid type: integer `5`, expected a sequence",
            ]
        );
    }

    #[test]
    fn syntax_error_names_its_line() {
        let got = problems("[audit]\n\ndurability = \n");
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("airlock.toml:3: not valid TOML"),
            "{got:?}"
        );
    }
}
