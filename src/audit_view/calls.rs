//! The calls of the log as the audit view lists them, their filter, and one call's chain.
//!
//! Owns: `CallRow` (one call, from its records), `CallFilter`, `chain`.
//! Uses: records as exported JSON (`serde_json::Value`), like the report.
//! Must not: read the log itself; it is handed the records.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// One call: what was asked, the decision, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CallRow {
    pub(super) call_id: String,
    /// Seq and time of its first record.
    pub(super) seq: u64,
    pub(super) time: String,
    pub(super) tool: String,
    pub(super) principal: String,
    /// The policy's decision (`allow`, `deny`, `confirm`, `approve`), empty if none recorded.
    pub(super) decision: String,
    pub(super) risk: String,
    /// How it ended, in a word or two: `completed`, `denied`, `approved → completed`, ….
    pub(super) outcome: String,
}

/// What the auditor filters by; `None` is no filter.
#[derive(Debug, Clone, Default)]
pub(super) struct CallFilter {
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
    pub(super) tool: Option<String>,
    pub(super) principal: Option<String>,
    pub(super) decision: Option<String>,
}

impl CallFilter {
    /// Whether `row` passes: inside the period (by its first record's day) and equal to
    /// every field given.
    pub(super) fn matches(&self, row: &CallRow) -> bool {
        let day = row.time.get(..10).unwrap_or_default();
        self.from.as_deref().is_none_or(|from| day >= from)
            && self.to.as_deref().is_none_or(|to| day <= to)
            && self.tool.as_deref().is_none_or(|t| t == row.tool)
            && self.principal.as_deref().is_none_or(|p| p == row.principal)
            && self.decision.as_deref().is_none_or(|d| d == row.decision)
    }

    /// The filter as recorded in `audit_viewed` (only the fields given).
    pub(super) fn to_value(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (key, value) in [("from", &self.from), ("to", &self.to), ("tool", &self.tool), ("principal", &self.principal), ("decision", &self.decision)] {
            if let Some(v) = value {
                out.insert(key.to_owned(), json!(v));
            }
        }
        Value::Object(out)
    }
}

/// The values seen, for the filter's choices.
#[derive(Debug, Default)]
pub(super) struct Choices {
    pub(super) tools: BTreeSet<String>,
    pub(super) principals: BTreeSet<String>,
    pub(super) decisions: BTreeSet<String>,
}

impl Choices {
    pub(super) fn of(rows: &[CallRow]) -> Choices {
        let mut c = Choices::default();
        for r in rows {
            for (set, value) in [(&mut c.tools, &r.tool), (&mut c.principals, &r.principal), (&mut c.decisions, &r.decision)] {
                if !value.is_empty() {
                    set.insert(value.clone());
                }
            }
        }
        c
    }
}

fn text(record: &Value, key: &str) -> String {
    record[key].as_str().unwrap_or_default().to_owned()
}

/// Every call of the log, in order of its first record.
pub(super) fn rows(records: &[Value]) -> Vec<CallRow> {
    let mut order: Vec<String> = Vec::new();
    let mut calls: BTreeMap<String, CallRow> = BTreeMap::new();
    for r in records {
        let id = text(r, "call_id");
        if id.is_empty() {
            continue;
        }
        let row = calls.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            CallRow { call_id: id.clone(), seq: r["seq"].as_u64().unwrap_or(0), time: text(r, "time"), ..CallRow::default() }
        });
        for (field, key) in [(&mut row.tool, "tool"), (&mut row.principal, "principal")] {
            if field.is_empty() {
                *field = text(r, key);
            }
        }
        match r["kind"].as_str().unwrap_or_default() {
            "decision" => {
                row.decision = text(r, "decision");
                row.risk = text(r, "risk");
                row.outcome = match row.decision.as_str() {
                    "deny" => "denied".to_owned(),
                    "confirm" | "approve" => "held".to_owned(),
                    _ => "decided".to_owned(),
                };
            }
            "approval_settled" => row.outcome = text(r, "decision"),
            "call_forwarded" if row.outcome == "approved" => row.outcome = "approved → forwarded".to_owned(),
            "call_forwarded" => row.outcome = "forwarded".to_owned(),
            "call_completed" if row.outcome.starts_with("approved") => row.outcome = "approved → completed".to_owned(),
            "call_completed" => row.outcome = "completed".to_owned(),
            _ => {}
        }
    }
    order.into_iter().filter_map(|id| calls.remove(&id)).collect()
}

/// Every record of call `id`, in order, with the records of its holds (votes carry the
/// approval id, not the call id).
pub(super) fn chain<'a>(records: &'a [Value], id: &str) -> Vec<&'a Value> {
    let approvals: BTreeSet<&str> =
        records.iter().filter(|r| r["call_id"] == id).filter_map(|r| r["approval_id"].as_str()).collect();
    records
        .iter()
        .filter(|r| r["call_id"] == id || r["approval_id"].as_str().is_some_and(|a| approvals.contains(a)))
        .collect()
}
