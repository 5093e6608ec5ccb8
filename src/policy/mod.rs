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

use std::path::{Path, PathBuf};

use crate::config::{ConfigErrors, Problem};

mod eval;
mod explain;
mod path;
mod rule;

pub use path::{NormalPath, PathGlob};
pub use eval::{ApprovalSpec, CallFacts, Decision, RuleMatch, default_effect, default_quorum};
pub use rule::{
    Approver, Channel, Effect, MAX_QUORUM, Predicate, Rule, RuleId, Test, ToolGlobs, parse_approver,
};

/// Every rule of every policy file, in policy order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    rules: Vec<Rule>,
    files: Vec<PathBuf>,
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
        for file in &files {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    // Keep the good rules of a file with problems, so duplicate ids across
                    // files are still reported in the same run.
                    let (good, problems) = rule::parse_file_partial(&text, file);
                    rules.extend(good);
                    errors.extend(problems);
                }
                Err(e) => errors.push(Problem::file(file, format!("cannot read: {e}"))),
            }
        }
        match PolicySet::from_rules(rules) {
            Ok(mut set) if errors.is_empty() => {
                set.files = files;
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
        let rules = rule::parse_file(text, file)?;
        let mut set = PolicySet::from_rules(rules)?;
        set.files = vec![file.to_path_buf()];
        Ok(set)
    }

    /// Builds a set from checked rules; rule ids must be unique.
    pub fn from_rules(rules: Vec<Rule>) -> Result<PolicySet, ConfigErrors> {
        let mut errors = ConfigErrors::new();
        for (i, rule) in rules.iter().enumerate() {
            if let Some(first) = rules[..i].iter().find(|r| r.id == rule.id) {
                let (file, line) = split_location(&rule.location);
                errors.push(Problem {
                    file,
                    line,
                    message: format!(
                        "rule \"{}\": id already used at {}",
                        rule.id, first.location
                    ),
                });
            }
        }
        errors.into_result(PolicySet {
            rules,
            files: Vec::new(),
        })
    }

    /// The rules, in policy order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
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
