//! Policy rules: the file format (`policies/*.toml`) and its checked form.
//!
//! Owns: `RawRule` (serde, `deny_unknown_fields`), `Rule` and its parts (`Effect`,
//! `Predicate`, `Approver`, `Channel`), and parsing one policy file with every problem
//! reported at its line.
//! Uses: `config` diagnostics, `risk::Risk`, globset, regex.
//! Must not: evaluate rules against calls (that is `eval.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;

use super::path::{NormalPath, PathGlob};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::config::{ConfigErrors, Source, check_json_pointer, deserialize_all, parse_duration};
use super::limit::Limit;
use crate::risk::Risk;

/// What a rule does to a matching call. Ordered weakest to strongest:
/// `Allow < Confirm < Approve < Deny`; the strongest matching effect wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Forward the call.
    Allow,
    /// The caller's own human confirms (MCP elicitation).
    Confirm,
    /// Independent approvers decide; the caller never counts.
    Approve,
    /// Refuse the call.
    Deny,
}

impl Effect {
    /// The lowercase name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Confirm => "confirm",
            Effect::Approve => "approve",
            Effect::Deny => "deny",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's `id`, unique across all policy files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(String);

impl RuleId {
    /// Wraps a rule id (non-empty).
    pub fn new(id: &str) -> Option<RuleId> {
        (!id.trim().is_empty()).then(|| RuleId(id.to_string()))
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may approve: `group:NAME` or `user:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Approver {
    /// Any member of the group.
    Group(String),
    /// That principal.
    User(String),
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::Group(g) => write!(f, "group:{g}"),
            Approver::User(u) => write!(f, "user:{u}"),
        }
    }
}

/// Where an approval request is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// `/api/v1/approvals` and `airlock approvals`.
    Api,
    /// A Slack message with buttons.
    Slack,
    /// A Teams Adaptive Card linking to the approver page.
    Teams,
    /// The `/approvals/{id}` page.
    Web,
}

impl Channel {
    /// The lowercase name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::Slack => "slack",
            Channel::Teams => "teams",
            Channel::Web => "web",
        }
    }
}

/// One test on the value a JSON pointer selects. All tests of a predicate must hold.
#[derive(Debug, Clone)]
pub enum Test {
    /// Equal to this value (numbers compare by value: `1` equals `1.0`).
    Equals(Value),
    /// Equal to one of these.
    OneOf(Vec<Value>),
    /// A string the regex finds a match in (use `^…$` to anchor).
    Regex(Regex),
    /// A number `>=` this.
    Min(f64),
    /// A number `<=` this.
    Max(f64),
    /// Present (`true`) or absent (`false`).
    Exists(bool),
    /// A path (or URI) that, normalised, is this directory or inside it (`path::NormalPath`).
    PathUnder(NormalPath),
    /// A path (or URI) whose normal spelling matches this glob (`*` within a segment).
    PathMatches(PathGlob),
}

/// `"/json/pointer" = { test = … }` inside `when`.
#[derive(Debug, Clone)]
pub struct Predicate {
    /// RFC 6901 pointer into the call's arguments.
    pub pointer: String,
    /// Tests that must all hold.
    pub tests: Vec<Test>,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id.
    pub id: RuleId,
    /// `file:line` of the rule, for explanations.
    pub location: String,
    /// Exposed-name globs (`None` = any tool).
    pub tools: Option<ToolGlobs>,
    /// URI globs of `resources/read` and `resources/subscribe`.
    pub resources: Option<ToolGlobs>,
    /// Exposed-name globs of `prompts/get`.
    pub prompts: Option<ToolGlobs>,
    /// Risk levels (`None` = any).
    pub risk: Option<Vec<Risk>>,
    /// Exact principals (`None` = anyone).
    pub principals: Option<Vec<String>>,
    /// The caller must be in one of these groups (`None` = no condition).
    pub groups: Option<Vec<String>>,
    /// Argument predicates, all of which must hold.
    pub when: Vec<Predicate>,
    /// What happens to a matching call.
    pub effect: Effect,
    /// Why, in the author's words.
    pub reason: Option<String>,
    /// Who may approve (only for `approve`).
    pub approvers: Vec<Approver>,
    /// How many approvers (only for `approve`; default: the risk's default).
    pub quorum: Option<u32>,
    /// How long the hold waits (for `confirm` and `approve`).
    pub timeout: Option<Duration>,
    /// Where the request is announced (only for `approve`; empty = every configured one).
    pub channels: Vec<Channel>,
}

/// Compiled `tools`, `resources` or `prompts` globs, with the patterns kept for
/// explanations.
#[derive(Debug, Clone)]
pub struct ToolGlobs {
    set: GlobSet,
    patterns: Vec<String>,
}

impl ToolGlobs {
    /// Compiles patterns (`*`, `?`, `[…]`, `{a,b}`; a name without these matches exactly).
    pub fn new(patterns: &[String]) -> Result<ToolGlobs, String> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(false)
                .backslash_escape(true)
                .build();
            builder.add(glob.map_err(|e| format!("\"{p}\" is not a valid glob: {}", e.kind()))?);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(ToolGlobs {
            set,
            patterns: patterns.to_vec(),
        })
    }
    /// True when `tool` matches any pattern.
    pub fn is_match(&self, tool: &str) -> bool {
        self.set.is_match(tool)
    }
    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

// ---- raw, as written -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    limit: Vec<Spanned<super::limit::RawLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<Spanned<String>>,
    tools: Option<Spanned<Vec<String>>>,
    resources: Option<Spanned<Vec<String>>>,
    prompts: Option<Spanned<Vec<String>>>,
    risk: Option<Spanned<Vec<Risk>>>,
    when: Option<BTreeMap<String, Spanned<RawPredicate>>>,
    principals: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
    effect: Option<Spanned<Effect>>,
    reason: Option<String>,
    approvers: Option<Vec<Spanned<String>>>,
    quorum: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    channels: Option<Spanned<Vec<Channel>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredicate {
    equals: Option<toml::Value>,
    one_of: Option<Vec<toml::Value>>,
    regex: Option<Spanned<String>>,
    min: Option<f64>,
    max: Option<f64>,
    exists: Option<bool>,
    path_under: Option<Spanned<String>>,
    path_matches: Option<Spanned<String>>,
}

/// Highest accepted `quorum`: more is certainly a typo.
pub const MAX_QUORUM: u32 = 100;

/// What one policy file holds once checked.
#[derive(Debug, Default)]
pub(super) struct PolicyFile {
    pub(super) rules: Vec<Rule>,
    pub(super) limits: Vec<Limit>,
}

/// Parses one policy file into its rules and limits, reporting every problem.
pub(super) fn parse_file(text: &str, file: &Path) -> Result<PolicyFile, ConfigErrors> {
    let (parsed, errors) = parse_file_partial(text, file);
    errors.into_result(parsed)
}

/// Parses one policy file, returning the rules and limits without problems and every
/// problem found.
pub(super) fn parse_file_partial(text: &str, file: &Path) -> (PolicyFile, ConfigErrors) {
    let source = Source::new(file, text);
    let mut errors = ConfigErrors::new();
    let Some(raw) = deserialize_all::<RawPolicyFile>(&source, &mut errors) else {
        return (PolicyFile::default(), errors);
    };
    let limits = raw.limit.into_iter().filter_map(|l| super::limit::check(l, &source, &mut errors)).collect();
    let mut rules = Vec::new();
    for raw_rule in raw.rule {
        let mut p = RuleProblems {
            source: &source,
            errors: &mut errors,
            id: String::new(),
        };
        if let Some(rule) = p.rule(raw_rule) {
            rules.push(rule);
        }
    }
    errors.sort_by_line();
    (PolicyFile { rules, limits }, errors)
}

/// Records problems of one rule, prefixed with its id.
struct RuleProblems<'s, 'e> {
    source: &'s Source<'s>,
    errors: &'e mut ConfigErrors,
    id: String,
}

impl RuleProblems<'_, '_> {
    fn text(&self, message: impl fmt::Display) -> String {
        if self.id.is_empty() {
            format!("rule: {message}")
        } else {
            format!("rule \"{}\": {message}", self.id)
        }
    }

    fn push(&mut self, span: std::ops::Range<usize>, message: impl fmt::Display) {
        let problem = self.source.problem(Some(span), self.text(message));
        self.errors.push(problem);
    }

    /// A missing key, unless a misspelling of it inside `span` was already reported.
    fn push_missing(
        &mut self,
        span: std::ops::Range<usize>,
        keys: &[&str],
        message: impl fmt::Display,
    ) {
        let problem = self.source.problem(Some(span.clone()), self.text(message));
        self.errors.push_missing(span, keys, problem);
    }

    fn rule(&mut self, raw: Spanned<RawRule>) -> Option<Rule> {
        let span = raw.span();
        let location = format!(
            "{}:{}",
            self.source.file().display(),
            self.source.line_of(span.start)
        );
        let raw = raw.into_inner();
        let before = self.errors.problems().len();
        let id = match raw
            .id
            .as_ref()
            .map(|i| (RuleId::new(i.get_ref()), i.span()))
        {
            Some((Some(id), _)) => Some(id),
            Some((None, at)) => {
                self.push(at, "key \"id\" must not be empty");
                None
            }
            None => {
                self.push_missing(span.clone(), &["id"], "needs an \"id\"");
                None
            }
        };
        self.id = id.as_ref().map(|i| i.0.clone()).unwrap_or_default();
        let effect = raw.effect.as_ref().map(|e| *e.get_ref());
        if effect.is_none() {
            self.push_missing(
                span,
                &["effect"],
                "needs an \"effect\" (allow, confirm, approve or deny)",
            );
        }
        let approval = self.approval_keys(&raw, effect);
        let tools = self.globs(raw.tools, "tools");
        let resources = self.globs(raw.resources, "resources");
        let prompts = self.globs(raw.prompts, "prompts");
        let risk = self.non_empty(raw.risk, "risk");
        let principals = self.non_empty(raw.principals, "principals");
        let groups = self.non_empty(raw.groups, "groups");
        let when = self.when(raw.when.unwrap_or_default());
        let ok = self.errors.problems().len() == before;
        let (approvers, quorum, timeout, channels) = approval;
        Some(Rule {
            id: id.filter(|_| ok)?,
            location,
            tools,
            resources,
            prompts,
            risk,
            principals,
            groups,
            when,
            effect: effect?,
            reason: raw.reason,
            approvers,
            quorum,
            timeout,
            channels,
        })
    }

    fn non_empty<T>(&mut self, value: Option<Spanned<Vec<T>>>, key: &str) -> Option<Vec<T>> {
        let value = value?;
        if value.get_ref().is_empty() {
            self.push(
                value.span(),
                format!(
                    "key \"{key}\" is empty, so the rule could never match; omit it to match any"
                ),
            );
            return None;
        }
        Some(value.into_inner())
    }

    /// `tools`, `resources` or `prompts`: non-empty, every glob valid.
    fn globs(&mut self, value: Option<Spanned<Vec<String>>>, key: &str) -> Option<ToolGlobs> {
        let span = value.as_ref().map(Spanned::span)?;
        let patterns = self.non_empty(value, key)?;
        match ToolGlobs::new(&patterns) {
            Ok(globs) => Some(globs),
            Err(why) => {
                self.push(span, format!("key \"{key}\": {why}"));
                None
            }
        }
    }

    fn when(&mut self, raw: BTreeMap<String, Spanned<RawPredicate>>) -> Vec<Predicate> {
        let mut out = Vec::new();
        for (pointer, pred) in raw {
            let span = pred.span();
            if let Err(why) = check_json_pointer(&pointer) {
                self.push(span.clone(), format!("key \"when\": {why}"));
            }
            let pred = pred.into_inner();
            let given = [
                pred.equals.is_some(),
                pred.one_of.is_some(),
                pred.regex.is_some(),
            ]
            .into_iter()
            .chain([
                pred.min.is_some(),
                pred.max.is_some(),
                pred.exists.is_some(),
                pred.path_under.is_some(),
                pred.path_matches.is_some(),
            ])
            .any(|b| b);
            let mut tests = Vec::new();
            if let Some(v) = pred.equals {
                tests.push(Test::Equals(self.json(v, &span)));
            }
            if let Some(vs) = pred.one_of {
                tests.push(Test::OneOf(
                    vs.into_iter().map(|v| self.json(v, &span)).collect(),
                ));
            }
            if let Some(re) = pred.regex {
                match Regex::new(re.get_ref()) {
                    Ok(re) => tests.push(Test::Regex(re)),
                    Err(e) => {
                        let text = e.to_string();
                        let last = text.lines().last().unwrap_or_default().trim();
                        let why = last.strip_prefix("error: ").unwrap_or(last);
                        self.push(
                            re.span(),
                            format!(
                                "when \"{pointer}\": regex \"{}\" is not valid: {why}",
                                re.get_ref()
                            ),
                        );
                    }
                }
            }
            for (bound, make) in [
                (pred.min, Test::Min as fn(f64) -> Test),
                (pred.max, Test::Max),
            ] {
                match bound {
                    Some(b) if b.is_finite() => tests.push(make(b)),
                    Some(_) => self.push(
                        span.clone(),
                        format!("when \"{pointer}\": min and max must be finite numbers"),
                    ),
                    None => {}
                }
            }
            if let Some(e) = pred.exists {
                tests.push(Test::Exists(e));
            }
            if let Some(root) = pred.path_under {
                match NormalPath::parse(root.get_ref()) {
                    Ok(root) => tests.push(Test::PathUnder(root)),
                    Err(why) => self.push(
                        root.span(),
                        format!("when \"{pointer}\": path_under \"{}\" is not a path to compare with: {why}", root.get_ref()),
                    ),
                }
            }
            if let Some(glob) = pred.path_matches {
                match PathGlob::new(glob.get_ref()) {
                    Ok(glob) => tests.push(Test::PathMatches(glob)),
                    Err(why) => self.push(
                        glob.span(),
                        format!("when \"{pointer}\": path_matches \"{}\" is not a valid glob: {why}", glob.get_ref()),
                    ),
                }
            }
            if !given {
                self.push_missing(
                    span, &["equals", "one_of", "regex", "min", "max", "exists", "path_under", "path_matches"],
                    format!(
                        "when \"{pointer}\": give at least one of equals, one_of, regex, min, max, exists, path_under, path_matches"
                    ),
                );
            }
            out.push(Predicate { pointer, tests });
        }
        out
    }

    fn json(&mut self, value: toml::Value, span: &std::ops::Range<usize>) -> Value {
        if let toml::Value::Datetime(_) = value {
            self.push(
                span.clone(),
                "dates cannot be compared with JSON arguments; quote them as strings",
            );
            return Value::Null;
        }
        serde_json::to_value(value).unwrap_or(Value::Null)
    }

    /// `approvers`, `quorum`, `timeout` and `channels`, checked against the effect.
    fn approval_keys(
        &mut self,
        raw: &RawRule,
        effect: Option<Effect>,
    ) -> (Vec<Approver>, Option<u32>, Option<Duration>, Vec<Channel>) {
        let is_approve = effect == Some(Effect::Approve);
        let holds = matches!(effect, Some(Effect::Approve | Effect::Confirm));
        let mut approvers = Vec::new();
        for a in raw.approvers.iter().flatten() {
            if !is_approve {
                self.push(
                    a.span(),
                    "key \"approvers\" only applies to effect = \"approve\"",
                );
                break;
            }
            match parse_approver(a.get_ref()) {
                Ok(ap) => approvers.push(ap),
                Err(why) => self.push(a.span(), format!("key \"approvers\": {why}")),
            }
        }
        let quorum = raw.quorum.as_ref().and_then(|q| {
            if !is_approve {
                self.push(
                    q.span(),
                    "key \"quorum\" only applies to effect = \"approve\"",
                );
                return None;
            }
            match u32::try_from(*q.get_ref()) {
                Ok(n) if (1..=MAX_QUORUM).contains(&n) => Some(n),
                _ => {
                    self.push(
                        q.span(),
                        format!("quorum must be between 1 and {MAX_QUORUM}"),
                    );
                    None
                }
            }
        });
        let timeout = raw.timeout.as_ref().and_then(|t| {
            if !holds {
                self.push(
                    t.span(),
                    "key \"timeout\" only applies to effect = \"confirm\" or \"approve\"",
                );
                return None;
            }
            parse_duration(t.get_ref())
                .map_err(|why| self.push(t.span(), format!("key \"timeout\": {why}")))
                .ok()
        });
        let mut channels = Vec::new();
        if let Some(cs) = &raw.channels {
            if is_approve {
                channels = cs.get_ref().clone();
                channels.sort();
                channels.dedup();
            } else {
                self.push(
                    cs.span(),
                    "key \"channels\" only applies to effect = \"approve\"",
                );
            }
        }
        (approvers, quorum, timeout, channels)
    }
}

/// Parses `group:NAME` or `user:NAME`.
pub fn parse_approver(text: &str) -> Result<Approver, String> {
    let (kind, name) = text.split_once(':').unwrap_or(("", text));
    let name = name.trim();
    match kind.trim() {
        _ if name.is_empty() => Err(format!("\"{text}\" names nobody")),
        "group" => Ok(Approver::Group(name.to_string())),
        "user" => Ok(Approver::User(name.to_string())),
        _ => Err(format!(
            "\"{text}\" must be \"group:NAME\" or \"user:NAME\""
        )),
    }
}
