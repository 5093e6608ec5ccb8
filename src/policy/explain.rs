//! Explanations: a decision in words, for `airlock explain` and for people reading the log.
//!
//! Owns: `Decision::explain`.
//! Uses: the `eval` types.
//! Must not: change a decision; this only describes one.

use std::fmt::Write as _;

use super::eval::{ApprovalSpec, Decision};

impl Decision {
    /// Every rule that matched, the winner and why, on several lines.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}: {}", self.subject.noun(), self.tool);
        let _ = writeln!(out, "risk: {}", self.risk);
        if self.matched.is_empty() {
            let _ = writeln!(out, "rules that matched: none");
        } else {
            let _ = writeln!(out, "rules that matched ({}):", self.matched.len());
            for m in &self.matched {
                let _ = write!(out, "  - {} ({}): {}", m.rule, m.location, m.effect);
                if let Some(why) = &m.error {
                    let _ = write!(out, " (could not be evaluated: {why}; fails closed)");
                } else if let Some(reason) = &m.reason {
                    let _ = write!(out, " — {reason}");
                }
                out.push('\n');
            }
        }
        match &self.winning_rule {
            Some(rule) if self.matched.len() > 1 => {
                let _ = writeln!(
                    out,
                    "decision: {}, by rule \"{rule}\" (the strongest effect wins: deny > approve > confirm > allow)",
                    self.effect
                );
            }
            Some(rule) => {
                let _ = writeln!(out, "decision: {}, by rule \"{rule}\"", self.effect);
            }
            None => {
                let _ = writeln!(
                    out,
                    "decision: {}, the default for {} risk",
                    self.effect, self.risk
                );
            }
        }
        if let Some(spec) = &self.approval {
            let _ = writeln!(out, "hold: {}", describe_hold(self, spec));
            let merged = self
                .matched
                .iter()
                .filter(|m| m.effect == self.effect && m.error.is_none())
                .count();
            if merged > 1 {
                let _ = writeln!(
                    out,
                    "merged from {merged} {} rules: highest quorum, union of approvers and channels, shortest timeout",
                    self.effect
                );
            }
        }
        let _ = writeln!(out, "reason: {}", self.reason);
        out
    }
}

fn describe_hold(decision: &Decision, spec: &ApprovalSpec) -> String {
    let mut parts = Vec::new();
    if decision.effect == super::Effect::Confirm {
        parts.push("the caller confirms".to_string());
    } else {
        parts.push(format!("quorum {} (the caller never counts)", spec.quorum));
        if spec.approvers.is_empty() {
            parts.push("approvers: anyone but the caller".to_string());
        } else {
            let names: Vec<String> = spec.approvers.iter().map(ToString::to_string).collect();
            parts.push(format!("approvers: {}", names.join(", ")));
        }
        if spec.channels.is_empty() {
            parts.push("channels: every configured channel".to_string());
        } else {
            let names: Vec<&str> = spec.channels.iter().map(|c| c.as_str()).collect();
            parts.push(format!("channels: {}", names.join(", ")));
        }
    }
    match spec.timeout {
        Some(t) => parts.push(format!("timeout {}", humantime::format_duration(t))),
        None => parts.push("timeout: approvals.timeout".to_string()),
    }
    parts.join("; ")
}
