//! Path-aware `when` tests: `path_under` and `path_matches`.
//!
//! Owns: `NormalPath` (a path or URI brought to one spelling) and the two tests on it.
//! Uses: globset, percent-encoding.
//! Must not: touch the file system (a rule decides on the text the downstream will get;
//! symlinks are the downstream's to refuse).
//!
//! A regex sees spelling, not location: `^/srv/secret/` misses `/srv//secret/x`,
//! `/srv/./secret/x` and `/srv/pub/../secret/x`, which all write into `secret/`. These tests
//! compare normalised paths instead: repeated and trailing separators dropped, `.` removed,
//! `..` applied. For URIs (`scheme://authority/path`), percent-encoding in the path is
//! decoded first, and query and fragment are dropped; `file://` URIs with an empty or
//! `localhost` authority compare as the plain path. A value that cannot be brought to one
//! spelling is not a match or a non-match but an error (the rule cannot be evaluated, so it
//! denies, whichever effect it has): `..` above the root, a relative path, a NUL, a
//! backslash (a separator on some servers), percent-encoding that survives one decoding, a
//! `file://` URI naming another host, and in a plain path an encoded `.`, `/`, `\` or `%`
//! (servers that decode would see something else than the rule).

use globset::{GlobBuilder, GlobMatcher};
use percent_encoding::percent_decode_str;

/// A path or URI in its one normal spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// `scheme://authority` in lower case, or empty for plain paths and local `file://`.
    origin: String,
    /// Absolute, `/`-separated, no empty, `.` or `..` segment, no trailing `/` (root: `/`).
    path: String,
}

impl NormalPath {
    /// Normalises `text`; the error says why it has no one spelling.
    pub fn parse(text: &str) -> Result<NormalPath, String> {
        if text.contains('\0') {
            return Err("it contains a NUL character".to_owned());
        }
        let (origin, raw) = split_uri(text);
        let decoded = match &origin {
            Some(_) => {
                let decoded = percent_decode_str(raw)
                    .decode_utf8()
                    .map_err(|_| "its percent-encoding is not UTF-8".to_owned())?
                    .into_owned();
                if has_escape(&decoded, |_| true) || decoded.contains('\0') {
                    return Err("it is percent-encoded twice".to_owned());
                }
                decoded
            }
            None if has_escape(raw, |b| matches!(b, b'.' | b'/' | b'\\' | b'%')) => {
                return Err("it percent-encodes a '.', '/', '\\' or '%', which a server may or may not decode".to_owned());
            }
            None => raw.to_owned(),
        };
        if decoded.contains('\\') {
            return Err("it contains a backslash, a separator on some servers".to_owned());
        }
        if !decoded.starts_with('/') {
            return Err("it is not absolute".to_owned());
        }
        let mut segments: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err("its \"..\" climbs above the root".to_owned());
                    }
                }
                s => segments.push(s),
            }
        }
        let path = format!("/{}", segments.join("/"));
        let origin = origin.map(|o| o.to_ascii_lowercase()).filter(|o| o != "file://" && o != "file://localhost");
        if origin.as_deref().is_some_and(|o| o.starts_with("file://")) {
            // Servers differ on whether they honour the host of a file URI.
            return Err("it is a file URI naming a host other than localhost".to_owned());
        }
        Ok(NormalPath { origin: origin.unwrap_or_default(), path })
    }

    /// Whether `self` is `root` or inside it (by whole segments: `/srv/data2` is not under
    /// `/srv/data`).
    pub fn is_under(&self, root: &NormalPath) -> bool {
        self.origin == root.origin
            && (root.path == "/"
                || self.path == root.path
                || self.path.strip_prefix(root.path.as_str()).is_some_and(|rest| rest.starts_with('/')))
    }

    /// The normal spelling (`scheme://authority/path`, or the plain path).
    pub fn as_text(&self) -> String {
        format!("{}{}", self.origin, self.path)
    }
}

/// `(Some("scheme://authority"), path)` for a URI, `(None, text)` otherwise.
fn split_uri(text: &str) -> (Option<String>, &str) {
    let Some((scheme, rest)) = text.split_once("://") else { return (None, text) };
    let is_scheme = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return (None, text);
    }
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    (Some(format!("{scheme}://{authority}")), path)
}

/// Whether `text` holds a `%XX` escape whose decoded byte satisfies `which`.
fn has_escape(text: &str, which: impl Fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && w[1].is_ascii_hexdigit()
            && w[2].is_ascii_hexdigit()
            && u8::from_str_radix(std::str::from_utf8(&w[1..]).unwrap_or("zz"), 16).is_ok_and(&which)
    })
}

/// A glob over normal paths: `*` and `?` stay within a segment, `**` spans segments.
#[derive(Debug, Clone)]
pub struct PathGlob {
    source: String,
    matcher: GlobMatcher,
}

impl PathGlob {
    /// Compiles `pattern`; the error is globset's, for `airlock check`.
    pub fn new(pattern: &str) -> Result<PathGlob, String> {
        let glob = GlobBuilder::new(pattern).literal_separator(true).build().map_err(|e| e.kind().to_string())?;
        Ok(PathGlob { source: pattern.to_owned(), matcher: glob.compile_matcher() })
    }

    /// Whether the normal spelling of `path` matches.
    pub fn is_match(&self, path: &NormalPath) -> bool {
        self.matcher.is_match(path.as_text())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> Result<String, String> {
        NormalPath::parse(text).map(|p| p.as_text())
    }

    #[test]
    fn spellings_of_one_place_normalise_alike() {
        for spelling in [
            "/srv/data/secret/x",
            "/srv/data//secret/x",
            "/srv/data/./secret/x",
            "/srv/data/pub/../secret/x",
            "/srv/data/secret/x/",
            "//srv///data/secret//x//",
            "file:///srv/data/%73ecret/x",
            "file://localhost/srv/data/pub/%2e%2e/secret/x?raw=1#top",
        ] {
            assert_eq!(norm(spelling).as_deref(), Ok("/srv/data/secret/x"), "{spelling}");
        }
        assert_eq!(norm("S3://Bucket/a/./b").as_deref(), Ok("s3://bucket/a/b"));
    }

    #[test]
    fn what_has_no_one_spelling_is_an_error() {
        for bad in [
            "/../etc/passwd",
            "/srv/../../etc",
            "relative/path",
            "",
            "/srv/a\\..\\b",
            "/srv/a\0b",
            "/srv/data/%2e%2e/secret",
            "/srv/data%2fsecret",
            "file:///srv/data/%252e%252e/secret",
            "file:///srv/%ff",
            "file://elsewhere/srv/data/secret/x",
        ] {
            assert!(NormalPath::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(norm("/srv/data/100%20done").as_deref(), Ok("/srv/data/100%20done"), "other escapes in plain paths are literal");
    }

    #[test]
    fn under_compares_whole_segments() {
        let root = NormalPath::parse("/srv/data/").unwrap();
        let under = |p: &str| NormalPath::parse(p).unwrap().is_under(&root);
        assert!(under("/srv/data") && under("/srv/data/x") && under("file:///srv/data/x"));
        assert!(!under("/srv/data2/x") && !under("/srv") && !under("s3://h/srv/data/x"));
        assert!(NormalPath::parse("/x").unwrap().is_under(&NormalPath::parse("/").unwrap()));
    }

    fn decide(policy: &str, path: &str) -> crate::policy::Decision {
        let set = crate::policy::PolicySet::parse(policy, std::path::Path::new("p.toml")).unwrap();
        let args = serde_json::json!({"path": path});
        set.decide(&crate::policy::CallFacts {
            subject: crate::policy::Subject::Tool,
            tool: "fs__write",
            risk: crate::risk::Risk::Low,
            args: &args,
            principal: "p",
            groups: &[],
        })
    }

    #[test]
    fn an_allow_rule_on_a_path_with_no_one_spelling_denies() {
        let allow = "[[rule]]\nid = \"data-ok\"\nwhen = { \"/path\" = { path_under = \"/srv/data\" } }\neffect = \"allow\"\n";
        assert_eq!(decide(allow, "/srv/data/x").effect, crate::policy::Effect::Allow);
        let refused = decide(allow, "/srv/data/../../../etc/passwd");
        assert_eq!(refused.effect, crate::policy::Effect::Deny, "{}", refused.reason);
        assert!(refused.reason.contains("cannot be normalised") && !refused.reason.contains("passwd"), "{}", refused.reason);
    }

    #[test]
    fn a_root_that_is_not_a_path_is_a_config_error_with_its_line() {
        let bad = "[[rule]]\nid = \"x\"\nwhen = { \"/path\" = { path_under = \"srv/data\" } }\neffect = \"deny\"\n";
        let errors = crate::policy::PolicySet::parse(bad, std::path::Path::new("p.toml")).unwrap_err().to_string();
        assert!(errors.contains("p.toml:3") && errors.contains("not absolute"), "{errors}");
        let glob = "[[rule]]\nid = \"x\"\nwhen = { \"/path\" = { path_matches = \"/srv/[\" } }\neffect = \"deny\"\n";
        assert!(crate::policy::PolicySet::parse(glob, std::path::Path::new("p.toml")).is_err());
    }

    #[test]
    fn globs_keep_star_within_a_segment() {
        let glob = PathGlob::new("/srv/*/secret/**").unwrap();
        let matches = |p: &str| glob.is_match(&NormalPath::parse(p).unwrap());
        assert!(matches("/srv/data/secret/x") && matches("/srv/data//secret/a/b") && matches("/srv/data/pub/../secret/x"));
        assert!(!matches("/srv/a/b/secret/x"));
        assert!(PathGlob::new("/srv/[").is_err());
    }
}
