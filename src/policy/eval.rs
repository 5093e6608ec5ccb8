//! Evaluation: which rules match a call, and the decision they add up to.
//!
//! Owns: `CallFacts`, `Decision`, `ApprovalSpec`, `RuleMatch`, per-rule matching with
//! three-valued logic (match / no match / cannot evaluate), precedence and approval merging,
//! and the defaults per risk.
//! Uses: `rule` types, `risk::Risk`, serde_json.
//! Must not: hold calls, talk to approvers, or write the log; a `Decision` is only data.
//!
//! A predicate on an absent argument does not match (except `exists = false`). A predicate
//! that cannot be evaluated, `regex` on a non-string or `min`/`max` on a non-number, makes
//! the rule "cannot evaluate" unless another of its predicates already failed (an AND that
//! is false either way). A rule that cannot be evaluated counts as a matching `deny`: the
//! policy fails closed, and the explanation says so.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::path::NormalPath;
use super::rule::{Approver, Channel, Effect, Predicate, Rule, RuleId, Test};
use crate::risk::Risk;

/// What kind of request a decision is about. A rule naming `tools`, `resources` or
/// `prompts` applies only to the kinds it names; a rule naming none of them applies to
/// all three (so `risk = ["high"]` also holds high-risk reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `tools/call`; the name is the exposed tool name.
    Tool,
    /// `resources/read` or `resources/subscribe`; the name is the URI and the `when`
    /// predicates see `{"uri": URI}`.
    Resource,
    /// `prompts/get`; the name is the exposed prompt name and the `when` predicates see
    /// the prompt's arguments.
    Prompt,
}

impl Subject {
    /// The noun for people: "tool", "resource", "prompt".
    pub fn noun(self) -> &'static str {
        match self {
            Subject::Tool => "tool",
            Subject::Resource => "resource",
            Subject::Prompt => "prompt",
        }
    }
}

/// What a decision is about.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    /// Whether this is a tool call, a resource read or a prompt.
    pub subject: Subject,
    /// The exposed tool name (a URI for resources, the exposed prompt name for prompts).
    pub tool: &'a str,
    /// The tool's risk.
    pub risk: Risk,
    /// The call's arguments (`{}` when the client sent none).
    pub args: &'a Value,
    /// The caller.
    pub principal: &'a str,
    /// The caller's groups.
    pub groups: &'a [String],
}

/// How a held call is released. Present for `confirm` and `approve` decisions; for
/// `confirm` only `timeout` matters (the caller's own human answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// Distinct approvers needed, never counting the caller.
    pub quorum: u32,
    /// Who may approve; empty = any authenticated principal other than the caller.
    pub approvers: Vec<Approver>,
    /// Where to announce; empty = every configured channel.
    pub channels: Vec<Channel>,
    /// Shortest timeout any matching rule asked for; `None` = `approvals.timeout`.
    pub timeout: Option<Duration>,
}

/// One rule that matched (or could not be evaluated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The rule.
    pub rule: RuleId,
    /// Its `file:line`.
    pub location: String,
    /// The effect it contributes: its own, or `Deny` when it could not be evaluated.
    pub effect: Effect,
    /// The author's reason.
    pub reason: Option<String>,
    /// Why the rule could not be evaluated, if it could not.
    pub error: Option<String>,
}

/// The outcome of policy for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether a tool, a resource or a prompt was decided on.
    pub subject: Subject,
    /// The tool decided on (the URI or prompt name for those subjects).
    pub tool: String,
    /// Its risk.
    pub risk: Risk,
    /// What happens.
    pub effect: Effect,
    /// For `confirm` / `approve`: how the hold is released.
    pub approval: Option<ApprovalSpec>,
    /// Every matching rule, in policy order.
    pub matched: Vec<RuleMatch>,
    /// The first matching rule with the strongest effect; `None` when the default applied.
    pub winning_rule: Option<RuleId>,
    /// One sentence for the caller and the log; names the rule and its reason.
    pub reason: String,
}

/// The quorum a risk gets by default: two for critical, otherwise one.
pub fn default_quorum(risk: Risk) -> u32 {
    if risk == Risk::Critical { 2 } else { 1 }
}

/// The effect when no rule matches: low allow, medium confirm, high and critical approve.
pub fn default_effect(risk: Risk) -> Effect {
    match risk {
        Risk::Low => Effect::Allow,
        Risk::Medium => Effect::Confirm,
        Risk::High | Risk::Critical => Effect::Approve,
    }
}

enum Outcome {
    Match,
    NoMatch,
    CannotEvaluate(String),
}

/// Decides a call against `rules` (in policy order).
pub(crate) fn decide(rules: &[Rule], facts: &CallFacts<'_>) -> Decision {
    let mut matched = Vec::new();
    let mut winner: Option<(usize, Effect)> = None;
    for (i, rule) in rules.iter().enumerate() {
        let (effect, error) = match outcome(rule, facts) {
            Outcome::NoMatch => continue,
            Outcome::Match => (rule.effect, None),
            Outcome::CannotEvaluate(why) => (Effect::Deny, Some(why)),
        };
        if winner.is_none_or(|(_, best)| effect > best) {
            winner = Some((i, effect));
        }
        matched.push((
            i,
            RuleMatch {
                rule: rule.id.clone(),
                location: rule.location.clone(),
                effect,
                reason: rule.reason.clone(),
                error,
            },
        ));
    }
    let Some((win, effect)) = winner else {
        return default_decision(facts);
    };
    let approval = match effect {
        Effect::Approve | Effect::Confirm => Some(merge(rules, &matched, effect, facts.risk)),
        Effect::Allow | Effect::Deny => None,
    };
    let reason = matched
        .iter()
        .find(|(i, _)| *i == win)
        .map(|(_, m)| rule_reason(m))
        .unwrap_or_default();
    Decision {
        subject: facts.subject,
        tool: facts.tool.to_string(),
        risk: facts.risk,
        effect,
        approval,
        winning_rule: Some(rules[win].id.clone()),
        matched: matched.into_iter().map(|(_, m)| m).collect(),
        reason,
    }
}

fn rule_reason(m: &RuleMatch) -> String {
    if let Some(why) = &m.error {
        return format!(
            "rule \"{}\" could not be evaluated ({why}), so the call is denied",
            m.rule
        );
    }
    let verb = match m.effect {
        Effect::Allow => "allows this call",
        Effect::Confirm => "requires confirmation",
        Effect::Approve => "requires approval",
        Effect::Deny => "denies this call",
    };
    match &m.reason {
        Some(r) => format!("rule \"{}\" {verb}: {r}", m.rule),
        None => format!("rule \"{}\" {verb}", m.rule),
    }
}

/// Merges every matching rule with the winning hold effect: highest quorum, union of
/// approvers and channels, shortest timeout.
fn merge(
    rules: &[Rule],
    matched: &[(usize, RuleMatch)],
    effect: Effect,
    risk: Risk,
) -> ApprovalSpec {
    let mut quorum = 1;
    let mut approvers = BTreeSet::new();
    let mut channels = BTreeSet::new();
    let mut timeout: Option<Duration> = None;
    for (i, m) in matched {
        if m.effect != effect || m.error.is_some() {
            continue;
        }
        let rule = &rules[*i];
        if effect == Effect::Approve {
            quorum = quorum.max(rule.quorum.unwrap_or_else(|| default_quorum(risk)));
        }
        approvers.extend(rule.approvers.iter().cloned());
        channels.extend(rule.channels.iter().copied());
        if let Some(t) = rule.timeout {
            timeout = Some(timeout.map_or(t, |cur| cur.min(t)));
        }
    }
    ApprovalSpec {
        quorum,
        approvers: approvers.into_iter().collect(),
        channels: channels.into_iter().collect(),
        timeout,
    }
}

fn default_decision(facts: &CallFacts<'_>) -> Decision {
    let effect = default_effect(facts.risk);
    let quorum = default_quorum(facts.risk);
    let (approval, what) = match effect {
        Effect::Allow => (None, "allowed".to_string()),
        Effect::Confirm => (Some(spec(1)), "confirmed by the caller".to_string()),
        Effect::Approve => {
            let n = if quorum == 1 {
                "one approver".to_string()
            } else {
                format!("{quorum} approvers")
            };
            (Some(spec(quorum)), format!("approved by {n}"))
        }
        Effect::Deny => (None, "denied".to_string()),
    };
    Decision {
        subject: facts.subject,
        tool: facts.tool.to_string(),
        risk: facts.risk,
        effect,
        approval,
        matched: Vec::new(),
        winning_rule: None,
        reason: format!(
            "no policy rule matched; {}-risk {}s are {what} by default",
            facts.risk,
            facts.subject.noun()
        ),
    }
}

fn spec(quorum: u32) -> ApprovalSpec {
    ApprovalSpec {
        quorum,
        approvers: Vec::new(),
        channels: Vec::new(),
        timeout: None,
    }
}

/// Whether the rule's `tools` / `resources` / `prompts` select this request (see `Subject`).
fn aims_at(rule: &Rule, facts: &CallFacts<'_>) -> bool {
    if rule.tools.is_none() && rule.resources.is_none() && rule.prompts.is_none() {
        return true;
    }
    let globs = match facts.subject {
        Subject::Tool => &rule.tools,
        Subject::Resource => &rule.resources,
        Subject::Prompt => &rule.prompts,
    };
    globs.as_ref().is_some_and(|g| g.is_match(facts.tool))
}

fn outcome(rule: &Rule, facts: &CallFacts<'_>) -> Outcome {
    let selected = aims_at(rule, facts)
        && rule.risk.as_ref().is_none_or(|r| r.contains(&facts.risk))
        && rule
            .principals
            .as_ref()
            .is_none_or(|p| p.iter().any(|p| p == facts.principal))
        && rule
            .groups
            .as_ref()
            .is_none_or(|g| g.iter().any(|g| facts.groups.contains(g)));
    if !selected {
        return Outcome::NoMatch;
    }
    let mut error = None;
    for pred in &rule.when {
        match predicate(pred, facts.args) {
            Outcome::Match => {}
            Outcome::NoMatch => return Outcome::NoMatch,
            Outcome::CannotEvaluate(why) => {
                error.get_or_insert(why);
            }
        }
    }
    match error {
        Some(why) => Outcome::CannotEvaluate(why),
        None => Outcome::Match,
    }
}

fn predicate(pred: &Predicate, args: &Value) -> Outcome {
    let value = args.pointer(&pred.pointer);
    let mut error = None;
    for test in &pred.tests {
        let result = match (test, value) {
            (Test::Exists(want), v) => bool_outcome(v.is_some() == *want),
            (_, None) => Outcome::NoMatch,
            (Test::Equals(want), Some(v)) => bool_outcome(json_eq(want, v)),
            (Test::OneOf(options), Some(v)) => bool_outcome(options.iter().any(|o| json_eq(o, v))),
            (Test::Regex(re), Some(Value::String(s))) => bool_outcome(re.is_match(s)),
            (Test::Regex(_), Some(v)) => cannot(pred, "regex", "a string", v),
            (Test::Min(min), Some(v)) => match v.as_f64() {
                Some(n) => bool_outcome(n >= *min),
                None => cannot(pred, "min", "a number", v),
            },
            (Test::Max(max), Some(v)) => match v.as_f64() {
                Some(n) => bool_outcome(n <= *max),
                None => cannot(pred, "max", "a number", v),
            },
            (Test::PathUnder(root), Some(Value::String(s))) => on_path(pred, "path_under", s, |p| p.is_under(root)),
            (Test::PathUnder(_), Some(v)) => cannot(pred, "path_under", "a string", v),
            (Test::PathMatches(glob), Some(Value::String(s))) => on_path(pred, "path_matches", s, |p| glob.is_match(p)),
            (Test::PathMatches(_), Some(v)) => cannot(pred, "path_matches", "a string", v),
        };
        match result {
            Outcome::Match => {}
            Outcome::NoMatch => return Outcome::NoMatch,
            Outcome::CannotEvaluate(why) => {
                error.get_or_insert(why);
            }
        }
    }
    match error {
        Some(why) => Outcome::CannotEvaluate(why),
        None => Outcome::Match,
    }
}

/// A path test: a path without one normal spelling cannot be evaluated, so the rule denies
/// whatever its effect (an allow rule must not wave through what a deny rule cannot see).
/// The message leaves the value out: it may be one the log redacts.
fn on_path(pred: &Predicate, test: &str, text: &str, holds: impl Fn(&NormalPath) -> bool) -> Outcome {
    match NormalPath::parse(text) {
        Ok(path) => bool_outcome(holds(&path)),
        Err(why) => Outcome::CannotEvaluate(format!("{test} on \"{}\": the path cannot be normalised: {why}", pred.pointer)),
    }
}

fn bool_outcome(b: bool) -> Outcome {
    if b { Outcome::Match } else { Outcome::NoMatch }
}

fn cannot(pred: &Predicate, test: &str, needs: &str, got: &Value) -> Outcome {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Outcome::CannotEvaluate(format!(
        "{test} on \"{}\" needs {needs}, the call has {kind}",
        pred.pointer
    ))
}

/// JSON equality, except that numbers compare by value (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
