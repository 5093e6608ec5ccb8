//! Policy: rules from `policies/*.toml`, how they decide a call, and how a decision is
//! explained (DESIGN.md §2).
//!
//! Owns: `PolicySet` (loading a directory of policy files, unique rule ids) and the public
//! face of `rule` (the format), `eval` (matching, precedence, defaults) and `explain`.
//! Uses: `config` diagnostics, `risk::Risk`.
//! Must not: hold calls, notify approvers or write the audit log; it only decides.
//!
//! Every matching rule counts and the strongest effect wins (`allow < confirm < approve <
//! deny`); ties go to the first rule in policy order (files by name, rules top to bottom).
//! Approvals of all matching `approve` rules merge: highest quorum, union of approvers and
//! channels, shortest timeout. A rule without `quorum` uses the risk's default (critical 2,
//! otherwise 1), so a broad rule cannot weaken the critical default by omission. Rules
//! without `approvers` add no constraint; if no matching rule names approvers, anyone but
//! the caller may approve. With no matching rule: low allow, medium confirm, high approve
//! (quorum 1), critical approve (quorum 2). A rule that cannot be evaluated denies.
//!
//! Resource reads and prompts are decided by the same rules (`Subject`): `tools`,
//! `resources` and `prompts` each select their own kind of request, a rule with none of
//! them selects all three, and a rule with only `tools` never matches a read.

use std::path::{Path, PathBuf};

use crate::audit::{Sha256Digest, canonical};
use crate::config::{ConfigErrors, Problem};

mod eval;
mod explain;
mod limit;
mod path;
mod rule;

pub use limit::postgres::PgCounters;
pub use limit::{Counters, CountersUnavailable, Limit, LimitBackend, Limited, Limiter, Rate, Refused, Taken};
pub use path::{NormalPath, PathGlob};
pub use eval::{ApprovalSpec, CallFacts, Decision, RuleMatch, Subject, default_effect, default_quorum};
pub use rule::{
    Approver, Channel, Effect, MAX_QUORUM, Predicate, Rule, RuleId, Test, ToolGlobs, parse_approver,
};

/// Every rule of every policy file, in policy order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    rules: Vec<Rule>,
    limits: Vec<Limit>,
    files: Vec<PathBuf>,
    digest: PolicyDigest,
}

/// Which policy version this is: SHA-256 of the canonical policy set, and of each file.
///
/// Canonical means `audit::canonical` over what the files parse to, not their bytes:
/// the set is `[{"file": <file name>, "policy": <the file's TOML as JSON>}, …]` in policy
/// order, so reformatting or editing comments changes no digest, while any change to a
/// rule, a limit, their order or a file's name does. A file's own digest is `canonical`
/// of its parsed TOML alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDigest {
    set: Sha256Digest,
    files: Vec<(String, Sha256Digest)>,
}

impl Default for PolicyDigest {
    fn default() -> Self {
        PolicyDigest::of(Vec::new())
    }
}

impl PolicyDigest {
    /// The digest of parsed files `(file name, document)`, in policy order.
    fn of(documents: Vec<(String, serde_json::Value)>) -> PolicyDigest {
        let files = documents.iter().map(|(name, doc)| (name.clone(), Sha256Digest::of(&canonical(doc)))).collect();
        let set: Vec<serde_json::Value> =
            documents.into_iter().map(|(file, policy)| serde_json::json!({"file": file, "policy": policy})).collect();
        PolicyDigest { set: Sha256Digest::of(&canonical(&serde_json::Value::Array(set))), files }
    }

    /// SHA-256 of the canonical policy set: what `decision` records carry.
    pub fn set(&self) -> Sha256Digest {
        self.set
    }

    /// Each file's name and the SHA-256 of its canonical form, in policy order.
    pub fn files(&self) -> &[(String, Sha256Digest)] {
        &self.files
    }
}

/// A policy file's parsed form, as the digest sees it. `None` when it does not parse
/// (then loading has reported the problem and there is no set to digest).
fn document(file: &Path, text: &str) -> Option<(String, serde_json::Value)> {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    toml::from_str::<serde_json::Value>(text).ok().map(|doc| (name, doc))
}

impl PolicySet {
    /// No rules: every call gets its risk's default.
    pub fn empty() -> PolicySet {
        PolicySet::default()
    }

    /// Loads every `*.toml` in `dir`, sorted by name. A missing directory holds no rules.
    pub fn load(dir: &Path) -> Result<PolicySet, ConfigErrors> {
        let mut errors = ConfigErrors::new();
        let files = crate::manifest::toml_files(dir, &mut errors);
        let mut rules = Vec::new();
        let mut limits = Vec::new();
        let mut documents = Vec::new();
        for file in &files {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    documents.extend(document(file, &text));
                    // Keep the good rules of a file with problems, so duplicate ids across
                    // files are still reported in the same run.
                    let (good, problems) = rule::parse_file_partial(&text, file);
                    rules.extend(good.rules);
                    limits.extend(good.limits);
                    errors.extend(problems);
                }
                Err(e) => errors.push(Problem::file(file, format!("cannot read: {e}"))),
            }
        }
        match PolicySet::from_parts(rules, limits) {
            Ok(mut set) if errors.is_empty() => {
                set.files = files;
                set.digest = PolicyDigest::of(documents);
                Ok(set)
            }
            Ok(_) => Err(errors),
            Err(e) => {
                errors.extend(e);
                Err(errors)
            }
        }
    }

    /// Parses the text of one policy file named `file`.
    pub fn parse(text: &str, file: &Path) -> Result<PolicySet, ConfigErrors> {
        let parsed = rule::parse_file(text, file)?;
        let mut set = PolicySet::from_parts(parsed.rules, parsed.limits)?;
        set.files = vec![file.to_path_buf()];
        set.digest = PolicyDigest::of(document(file, text).into_iter().collect());
        Ok(set)
    }

    /// Builds a set from checked rules; rule ids must be unique.
    pub fn from_rules(rules: Vec<Rule>) -> Result<PolicySet, ConfigErrors> {
        PolicySet::from_parts(rules, Vec::new())
    }

    /// Builds a set from checked rules and limits; ids must be unique across both.
    fn from_parts(rules: Vec<Rule>, limits: Vec<Limit>) -> Result<PolicySet, ConfigErrors> {
        let mut errors = ConfigErrors::new();
        let ids: Vec<(&str, &RuleId, &str)> = rules
            .iter()
            .map(|r| ("rule", &r.id, r.location.as_str()))
            .chain(limits.iter().map(|l| ("limit", &l.id, l.location.as_str())))
            .collect();
        for (i, (kind, id, location)) in ids.iter().enumerate() {
            if let Some((_, _, first)) = ids[..i].iter().find(|(_, other, _)| other == id) {
                let (file, line) = split_location(location);
                errors.push(Problem {
                    file,
                    line,
                    message: format!("{kind} \"{id}\": id already used at {first}"),
                });
            }
        }
        errors.into_result(PolicySet {
            rules,
            limits,
            files: Vec::new(),
            digest: PolicyDigest::default(),
        })
    }

    /// The rate limits, in policy order.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// The rules, in policy order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Which policy version this is (see `PolicyDigest`).
    pub fn digest(&self) -> &PolicyDigest {
        &self.digest
    }

    /// The files the rules came from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Advice that is not an error: a `regex` anchored at `^/` on a path-like field matches
    /// a spelling, and `//`, `/./` or `/../` spell the same place another way.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for pred in &rule.when {
                for test in &pred.tests {
                    if let Test::Regex(re) = test
                        && path_regex(re.as_str(), &pred.pointer)
                    {
                        out.push(format!(
                            "{}: rule \"{}\": when \"{}\": regex \"{}\" matches how a path is spelled, and \"//\", \"/./\" \
                             or \"/../\" spell the same place differently; use path_under or path_matches, which normalise first",
                            rule.location, rule.id, pred.pointer, re.as_str()
                        ));
                    }
                }
            }
        }
        out
    }

    /// Decides a call. Pure and cheap: no I/O, no locks.
    pub fn decide(&self, facts: &CallFacts<'_>) -> Decision {
        eval::decide(&self.rules, facts)
    }
}

/// A regex anchored at `^/` (or `^file:`) used on a field that looks like a path: by its
/// name, or because the pattern itself goes on to name directories.
fn path_regex(regex: &str, pointer: &str) -> bool {
    let Some(rest) = regex.strip_prefix("^/").or_else(|| regex.strip_prefix("^file:")) else { return false };
    let field = pointer.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
    let named = ["path", "file", "dir", "folder", "uri", "url", "dest", "source", "src", "target", "root", "location"]
        .iter()
        .any(|word| field.contains(word));
    named || rest.contains('/')
}

fn split_location(location: &str) -> (PathBuf, Option<usize>) {
    match location.rsplit_once(':') {
        Some((file, line)) => (PathBuf::from(file), line.parse().ok()),
        None => (PathBuf::from(location), None),
    }
}

#[cfg(test)]
mod digest_tests {
    use std::path::Path;

    use super::PolicySet;

    const RULE: &str = "[[rule]]\nid = \"a\"\ntools = [\"x__*\"]\neffect = \"deny\"\nreason = \"no\"\n";

    #[test]
    fn comments_and_layout_do_not_change_the_digest_but_a_rule_does() {
        let file = Path::new("p.toml");
        let plain = PolicySet::parse(RULE, file).expect("parses");
        let commented = format!("# a comment\n\n{}", RULE.replace("effect = ", "effect   =   "));
        let commented = PolicySet::parse(&commented, file).expect("parses");
        assert_eq!(plain.digest(), commented.digest());
        let edited = PolicySet::parse(&RULE.replace("deny", "allow"), file).expect("parses");
        assert_ne!(plain.digest().set(), edited.digest().set());
        assert_ne!(plain.digest().set(), PolicySet::empty().digest().set());
    }
}
