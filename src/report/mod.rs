//! Evidence for auditors: what the audit log shows for a period, gathered into one
//! document (`airlock report`).
//!
//! Owns: `Evidence` (the report's stable JSON form, `airlock-report/v1`), how it is gathered
//! from the log's records, and its renderings (`html.rs`).
//! Uses: records as exported JSON (`serde_json::Value`, so that record kinds a newer
//! gateway writes are carried, not refused), and the verification result it is handed.
//! Must not: open or write the data directory itself (the CLI or the audit view hands it a
//! reader), or decide anything: every figure is counted from records, each traceable to
//! its sequence number.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::audit::{AuditError, LogReader, Seq, VerifyFailure, VerifyReport};

mod html;

pub use html::render_html;

/// Version tag of the JSON form; a change in field meaning bumps it.
pub const FORMAT: &str = "airlock-report/v1";

/// A hold decided with less than this share of its lifetime left is "near expiry": the
/// approver may have been rushed, or the hold kept open to wear them down.
const NEAR_EXPIRY_SHARE: f64 = 0.1;

/// The days covered, inclusive, as `YYYY-MM-DD` (UTC).
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
}

impl Period {
    /// Checks both dates (`YYYY-MM-DD`, `from <= to`).
    pub fn new(from: &str, to: &str) -> Result<Period, String> {
        for d in [from, to] {
            let ok = d.len() == 10 && humantime::parse_rfc3339(&format!("{d}T00:00:00Z")).is_ok();
            if !ok {
                return Err(format!("\"{d}\" is not a date; write YYYY-MM-DD"));
            }
        }
        if from > to {
            return Err(format!("the period starts ({from}) after it ends ({to})"));
        }
        Ok(Period { from: from.to_owned(), to: to.to_owned() })
    }

    fn contains(&self, time: &str) -> bool {
        time.get(..10).is_some_and(|day| day >= self.from.as_str() && day <= self.to.as_str())
    }
}

/// What verifying the whole log found (the report covers a period of a verified log).
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// `intact`, `failed` or `unreadable`.
    pub status: &'static str,
    /// One line: what was checked, or the first problem.
    pub summary: String,
    /// Records checked (`first..=last`).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Signed checkpoints checked.
    pub checkpoints: u64,
    /// Ids of the keys that signed, in order of use.
    pub keys: Vec<String>,
    /// Warnings that are not tampering.
    pub warnings: Vec<String>,
    /// The command that re-checks this.
    pub reverify: String,
}

/// The period of a report: `from`/`to` (`YYYY-MM-DD`) as given, else from the day of the
/// first record to today (UTC).
pub fn period_of(records: &[Value], from: Option<String>, to: Option<String>) -> Result<Period, String> {
    let first_day = records.iter().find_map(|r| r["time"].as_str()).and_then(|t| t.get(..10)).map(str::to_owned);
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let from = from.or(first_day).unwrap_or_else(|| today[..10].to_owned());
    let to = to.unwrap_or_else(|| today[..10].to_owned());
    Period::new(&from, &to)
}

impl Verification {
    /// The report's account of a verification result (`audit::verify_dir`, or
    /// `audit::verify_live` on a running gateway); `reverify` is the command that re-checks it.
    pub fn of(result: Result<Result<VerifyReport, VerifyFailure>, AuditError>, reverify: String) -> Verification {
        let mut v = Verification {
            status: "unreadable",
            summary: String::new(),
            first_seq: 0,
            last_seq: 0,
            checkpoints: 0,
            keys: Vec::new(),
            warnings: Vec::new(),
            reverify,
        };
        match result {
            Ok(Ok(report)) => {
                v.status = "intact";
                v.first_seq = report.first.get();
                v.last_seq = report.last.get();
                v.checkpoints = report.checkpoints;
                v.keys = report.keys.iter().map(ToString::to_string).collect();
                v.warnings = report.warnings;
                v.summary = format!(
                    "Records {}–{} are intact: every record is hash-chained and covered by {} checkpoints signed by the trusted key; the latest root is {}.",
                    v.first_seq, v.last_seq, v.checkpoints, report.root
                );
            }
            Ok(Err(failure)) => {
                v.status = "failed";
                v.summary = format!("Verification failed at {failure}. Figures below come from records that can no longer be trusted.");
            }
            Err(error) => v.summary = format!("The log could not be read for verification: {error}."),
        }
        v
    }

    /// True when the log verified.
    pub fn is_intact(&self) -> bool {
        self.status == "intact"
    }
}

/// Every record of a log, parsed, in order: the records the report is gathered from, read
/// through whichever reader the caller has (a stopped data dir's `LogReader::open`, or a
/// running gateway's `AuditLog::reader`). Records from elsewhere (the control socket) go
/// straight to [`gather`]. A record that does not parse is left out (verification shows it).
pub fn records_of(reader: &LogReader) -> Result<Vec<Value>, AuditError> {
    let mut records = Vec::new();
    for item in reader.records_from(Seq::new(1)) {
        let (seq, bytes) = item?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => records.push(value),
            Err(e) => tracing::warn!(%seq, error = %e, "record does not parse; left out of the report"),
        }
    }
    Ok(records)
}

/// One call, as the report refers to it.
#[derive(Debug, Clone, Serialize)]
pub struct CallRef {
    pub call_id: String,
    pub seq: u64,
    pub time: String,
    pub tool: String,
    pub principal: String,
    pub decision: String,
    pub risk: String,
    pub note: String,
}

/// One vote on a hold.
#[derive(Debug, Clone, Serialize)]
pub struct Vote {
    pub seq: u64,
    pub time: String,
    pub approver: String,
    pub channel: String,
    pub decision: String,
    pub comment: String,
}

/// One hold, from request to outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub approval_id: String,
    pub call_id: String,
    pub tool: String,
    pub caller: String,
    /// `confirm` or `approve`.
    pub kind: String,
    pub rule: String,
    pub quorum: u64,
    pub requested_at: String,
    pub expires_at: String,
    /// `approved`, `denied`, `expired`, `cancelled`, or `pending` when the period ends first.
    pub outcome: String,
    pub settled_at: String,
    /// Seconds from request to outcome.
    pub seconds_to_decision: Option<f64>,
    pub reason: String,
    /// The policy version in force when it was settled (empty: none recorded).
    pub policy_sha256: String,
    pub votes: Vec<Vote>,
    /// Every record of the held call, in order: `(seq, kind)`.
    pub chain: Vec<(u64, String)>,
}

/// A record an auditor looks at on its own (tool changes, restarts, key rotations).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub seq: u64,
    pub time: String,
    pub kind: String,
    pub subject: String,
    pub detail: String,
}

/// One version of the policy set, from the `config_loaded` record that put it in force
/// (or, for gateways that record no `config_loaded`, the first decision that names it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyVersion {
    /// Hex SHA-256 of the canonical policy set, as on each `decision` record.
    pub policy_sha256: String,
    /// When and at which record it came into force.
    pub since: String,
    pub seq: u64,
    /// `start`, `reload`, or `decision` when only decisions name it.
    pub reason: String,
    /// Digest of the whole configuration loaded with it, when recorded.
    pub config_sha256: String,
    /// Digest of each policy file (`config_loaded.detail.policies`).
    pub policies: BTreeMap<String, String>,
    /// What the load changed (`config_loaded.detail.changed`), as recorded.
    pub changed: Vec<String>,
    /// Until when it was in force (the next version's `since`); empty: still at the end of the log.
    pub until: String,
    /// Decisions of the period taken under it.
    pub decisions: u64,
}

/// Counts by one dimension, largest first when rendered.
pub type Counts = BTreeMap<String, u64>;

/// The totals of the period.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub calls: u64,
    pub by_decision: Counts,
    pub by_risk: Counts,
    pub by_tool: Counts,
    pub by_server: Counts,
    pub by_principal: Counts,
}

/// What an auditor asks about first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Exceptions {
    /// Calls allowed to run at high or critical risk without a hold.
    pub allowed_at_high_risk: Vec<CallRef>,
    /// Holds decided with little of their lifetime left.
    pub decided_near_expiry: Vec<String>,
    /// Holds decided after a policy change that happened while they waited.
    pub decided_after_policy_change: Vec<String>,
    /// Calls to a tool after it changed (critical until accepted).
    pub used_while_changed: Vec<CallRef>,
    /// Calls received whose outcome the period does not show (no decision or no result).
    pub without_outcome: Vec<String>,
}

/// A day's activity, for the chart.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Day {
    pub date: String,
    pub calls: u64,
    pub holds: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub format: &'static str,
    pub generated_at: String,
    pub period: Period,
    pub data_dir: String,
    pub verification: Verification,
    pub totals: Totals,
    pub approvals: Vec<Approval>,
    pub exceptions: Exceptions,
    pub tool_changes: Vec<Event>,
    pub restarts: Vec<Event>,
    pub key_rotations: Vec<Event>,
    /// The policy versions in force during the period, oldest first, each with when it
    /// came into force and how many of the period's decisions were taken under it.
    pub policy_versions: Vec<PolicyVersion>,
    pub daily: Vec<Day>,
}

fn text(record: &Value, key: &str) -> String {
    match &record[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn seq(record: &Value) -> u64 {
    record["seq"].as_u64().unwrap_or(0)
}

fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let a = humantime::parse_rfc3339_weak(from.trim_end_matches('Z')).ok()?;
    let b = humantime::parse_rfc3339_weak(to.trim_end_matches('Z')).ok()?;
    Some(b.duration_since(a).ok()?.as_secs_f64())
}

/// Gathers the evidence of `period` from every record of the log, in order (records
/// before the period still count for context: tool changes, policy versions, holds opened
/// earlier and settled inside it). The records may come from any source: a data dir, a
/// running gateway's reader, or an export sent over the control socket.
pub fn gather<'a>(records: impl IntoIterator<Item = &'a Value>, period: Period, verification: Verification, data_dir: String) -> Evidence {
    let mut gathered = Gatherer::default();
    for record in records {
        gathered.see(record, &period);
    }
    gathered.finish(period, verification, data_dir)
}

#[derive(Default)]
struct Gatherer {
    totals: Totals,
    approvals: BTreeMap<String, Approval>,
    approval_order: Vec<String>,
    exceptions: Exceptions,
    tool_changes: Vec<Event>,
    restarts: Vec<Event>,
    key_rotations: Vec<Event>,
    /// Every policy version of the log, in the order they came into force.
    policy_versions: Vec<PolicyVersion>,
    /// Seqs at which a new policy version replaced another (not the first one), to spot
    /// holds that outlived the policy they were requested under.
    policy_changes: Vec<u64>,
    /// Seq of each hold's `approval_requested`, by approval id.
    requested_seq: BTreeMap<String, u64>,
    daily: BTreeMap<String, Day>,
    /// Tools flagged changed, and when.
    changed: BTreeMap<String, String>,
    /// Calls received in the period and whether their decision / completion was seen.
    open_calls: BTreeMap<String, (u64, bool, bool)>,
    servers: BTreeMap<String, String>,
    /// Calls whose decision was `allow`.
    allowed: BTreeSet<String>,
    call_records: BTreeMap<String, Vec<(u64, String)>>,
}

impl Gatherer {
    fn see(&mut self, r: &Value, period: &Period) {
        let kind = text(r, "kind");
        let time = text(r, "time");
        let call_id = text(r, "call_id");
        let inside = period.contains(&time);
        if !call_id.is_empty() {
            self.call_records.entry(call_id.clone()).or_default().push((seq(r), kind.clone()));
        }
        if let Some(server) = r["detail"]["server"].as_str() {
            self.servers.insert(call_id.clone(), server.to_owned());
        }
        if kind == "config_loaded" {
            self.config_loaded(r);
        }
        if kind == "decision"
            && let Some(policy) = r["policy_sha256"].as_str()
        {
            self.decided_under(policy, r, inside);
        }
        let event = |subject: String, detail: String| Event { seq: seq(r), time: time.clone(), kind: kind.clone(), subject, detail };
        match kind.as_str() {
            "tool_changed" | "tool_added" => {
                self.changed.insert(text(r, "tool"), time.clone());
                if inside {
                    self.tool_changes.push(event(text(r, "tool"), r["detail"].to_string()));
                }
            }
            "gateway_started" if inside => {
                self.restarts.push(event(text(&r["detail"], "version"), format!("boot {}", text(&r["detail"], "boot"))));
            }
            "key_rotated" if inside => {
                self.key_rotations.push(event(text(&r["detail"], "new_key_id"), format!("replaces {}", text(&r["detail"], "old_key_id"))));
            }
            "call_received" if inside => {
                self.open_calls.insert(call_id, (seq(r), false, false));
            }
            "decision" => self.decision(r, &call_id, &time, inside),
            "call_completed" => {
                if let Some(open) = self.open_calls.get_mut(&call_id) {
                    open.2 = true;
                }
            }
            "approval_requested" => self.requested(r, &call_id, &time),
            "approval_decided" => self.voted(r),
            "approval_settled" => self.settled(r, &time),
            _ => {}
        }
    }

    /// A `config_loaded` record: a new version when its policy digest differs from the one
    /// in force (a start with the same policies is no change).
    fn config_loaded(&mut self, r: &Value) {
        let detail = &r["detail"];
        let Some(policy) = detail["policy_sha256"].as_str() else { return };
        if self.policy_versions.last().is_some_and(|v| v.policy_sha256 == policy) {
            return;
        }
        let strings = |v: &Value| -> BTreeMap<String, String> {
            v.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()).unwrap_or_default()
        };
        let changed = match &detail["changed"] {
            Value::Array(items) => items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned)).collect(),
            _ => Vec::new(),
        };
        self.new_version(PolicyVersion {
            policy_sha256: policy.to_owned(),
            since: text(r, "time"),
            seq: seq(r),
            reason: text(detail, "reason"),
            config_sha256: text(detail, "config_sha256"),
            policies: strings(&detail["policies"]),
            changed,
            ..PolicyVersion::default()
        });
    }

    fn new_version(&mut self, version: PolicyVersion) {
        if let Some(last) = self.policy_versions.last_mut() {
            last.until = version.since.clone();
            self.policy_changes.push(version.seq);
        }
        self.policy_versions.push(version);
    }

    /// A decision names the policy it was taken under; a digest no `config_loaded`
    /// introduced (a gateway that does not record them) becomes a version of its own.
    fn decided_under(&mut self, policy: &str, r: &Value, inside: bool) {
        if self.policy_versions.last().is_none_or(|v| v.policy_sha256 != policy) {
            self.new_version(PolicyVersion {
                policy_sha256: policy.to_owned(),
                since: text(r, "time"),
                seq: seq(r),
                reason: "decision".to_owned(),
                ..PolicyVersion::default()
            });
        }
        if inside && let Some(version) = self.policy_versions.last_mut() {
            version.decisions += 1;
        }
    }

    fn decision(&mut self, r: &Value, call_id: &str, time: &str, inside: bool) {
        if let Some(open) = self.open_calls.get_mut(call_id) {
            open.1 = true;
        }
        if text(r, "decision") == "allow" {
            self.allowed.insert(call_id.to_owned());
        }
        if !inside {
            return;
        }
        let call = CallRef {
            call_id: call_id.to_owned(),
            seq: seq(r),
            time: time.to_owned(),
            tool: text(r, "tool"),
            principal: text(r, "principal"),
            decision: text(r, "decision"),
            risk: text(r, "risk"),
            note: text(r, "reason"),
        };
        let t = &mut self.totals;
        t.calls += 1;
        for (counts, key) in [
            (&mut t.by_decision, &call.decision),
            (&mut t.by_risk, &call.risk),
            (&mut t.by_tool, &call.tool),
            (&mut t.by_principal, &call.principal),
        ] {
            let key = if key.is_empty() { "(none)" } else { key.as_str() };
            *counts.entry(key.to_owned()).or_default() += 1;
        }
        self.daily.entry(time.get(..10).unwrap_or_default().to_owned()).or_default().calls += 1;
        if call.decision == "allow" && matches!(call.risk.as_str(), "high" | "critical") {
            self.exceptions.allowed_at_high_risk.push(call.clone());
        }
        if self.changed.get(&call.tool).is_some_and(|changed_at| changed_at.as_str() <= time) && call.risk == "critical" {
            self.exceptions.used_while_changed.push(call);
        }
    }

    fn requested(&mut self, r: &Value, call_id: &str, time: &str) {
        let id = text(r, "approval_id");
        if self.approvals.contains_key(&id) {
            return; // a retry re-attached: the same hold
        }
        let detail = &r["detail"];
        let kind = if text(r, "decision") == "confirm" { "confirm" } else { "approve" };
        self.approvals.insert(
            id.clone(),
            Approval {
                approval_id: id.clone(),
                call_id: call_id.to_owned(),
                tool: text(r, "tool"),
                caller: text(r, "principal"),
                kind: kind.to_owned(),
                rule: text(r, "rule"),
                quorum: detail["quorum"].as_u64().unwrap_or(1),
                requested_at: time.to_owned(),
                expires_at: text(detail, "expires_at"),
                outcome: "pending".to_owned(),
                settled_at: String::new(),
                seconds_to_decision: None,
                reason: String::new(),
                policy_sha256: String::new(),
                votes: Vec::new(),
                chain: Vec::new(),
            },
        );
        self.requested_seq.insert(id.clone(), seq(r));
        self.approval_order.push(id);
    }

    fn voted(&mut self, r: &Value) {
        if let Some(a) = self.approvals.get_mut(&text(r, "approval_id")) {
            a.votes.push(Vote {
                seq: seq(r),
                time: text(r, "time"),
                approver: text(r, "approver"),
                channel: text(r, "channel"),
                decision: text(r, "decision"),
                comment: text(r, "comment"),
            });
        }
    }

    fn settled(&mut self, r: &Value, time: &str) {
        let Some(a) = self.approvals.get_mut(&text(r, "approval_id")) else {
            return;
        };
        a.outcome = text(r, "decision");
        a.settled_at = time.to_owned();
        a.reason = text(r, "reason");
        a.seconds_to_decision = seconds_between(&a.requested_at, time);
        a.policy_sha256 = self.policy_versions.last().map(|v| v.policy_sha256.clone()).unwrap_or_default();
        if a.outcome == "approved" || a.outcome == "denied" {
            let lifetime = seconds_between(&a.requested_at, &a.expires_at);
            let left = seconds_between(time, &a.expires_at);
            if let (Some(lifetime), Some(left)) = (lifetime, left)
                && left < lifetime * NEAR_EXPIRY_SHARE
            {
                self.exceptions.decided_near_expiry.push(format!(
                    "{} ({}): {} with {left:.0} s of {lifetime:.0} s left",
                    a.approval_id, a.tool, a.outcome
                ));
            }
            // By sequence number: exact even when records share a timestamp.
            let requested = self.requested_seq.get(&a.approval_id).copied().unwrap_or(0);
            let settled = seq(r);
            if let Some(change) = self.policy_changes.iter().find(|&&at| at > requested && at < settled) {
                let to = self.policy_versions.iter().find(|v| v.seq == *change).map(|v| short(&v.policy_sha256)).unwrap_or_default();
                self.exceptions.decided_after_policy_change.push(format!(
                    "{} ({}): requested {} (seq {requested}), the policy changed to {to} at seq {change}, then it was {} at {time} (seq {settled})",
                    a.approval_id, a.tool, a.requested_at, a.outcome
                ));
            }
        }
    }

    fn finish(mut self, period: Period, verification: Verification, data_dir: String) -> Evidence {
        for (call_id, server) in &self.servers {
            if self.open_calls.contains_key(call_id) {
                *self.totals.by_server.entry(server.clone()).or_default() += 1;
            }
        }
        let decided_unforwarded = self.totals.calls.saturating_sub(self.totals.by_server.values().sum());
        if decided_unforwarded > 0 {
            self.totals.by_server.insert("(not forwarded)".into(), decided_unforwarded);
        }
        for (call_id, (seq, decided, completed)) in &self.open_calls {
            let kinds = self.call_records.get(call_id).map(Vec::as_slice).unwrap_or_default();
            let forwarded = kinds.iter().any(|(_, k)| k == "call_forwarded");
            let allowed = self.allowed.contains(call_id);
            let what = if !decided {
                "no decision recorded"
            } else if forwarded && !completed {
                "forwarded, but no result recorded (still running, or the gateway stopped)"
            } else if allowed && !forwarded {
                "allowed, but never forwarded"
            } else {
                continue;
            };
            self.exceptions.without_outcome.push(format!("{call_id} (seq {seq}): {what}"));
        }
        let mut approvals = Vec::new();
        for id in &self.approval_order {
            let Some(mut a) = self.approvals.remove(id) else { continue };
            let inside = period.contains(&a.requested_at) || (!a.settled_at.is_empty() && period.contains(&a.settled_at));
            if !inside {
                continue;
            }
            a.chain = self.call_records.get(&a.call_id).cloned().unwrap_or_default();
            self.daily.entry(a.requested_at.get(..10).unwrap_or_default().to_owned()).or_default().holds += 1;
            approvals.push(a);
        }
        let policy_versions = self
            .policy_versions
            .into_iter()
            .filter(|v| v.since.get(..10).is_some_and(|day| day <= period.to.as_str()))
            .filter(|v| v.until.is_empty() || v.until.get(..10).is_some_and(|day| day >= period.from.as_str()))
            .collect();
        let daily = self
            .daily
            .into_iter()
            .filter(|(date, _)| !date.is_empty())
            .map(|(date, day)| Day { date, ..day })
            .collect();
        Evidence {
            format: FORMAT,
            generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            period,
            data_dir,
            verification,
            totals: self.totals,
            approvals,
            exceptions: self.exceptions,
            tool_changes: self.tool_changes,
            restarts: self.restarts,
            key_rotations: self.key_rotations,
            policy_versions,
            daily,
        }
    }
}

/// The first 12 hex digits of a digest, as people quote one.
pub fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

/// Distinct approvers of the period, for the summary line.
pub fn approvers(evidence: &Evidence) -> BTreeSet<String> {
    evidence.approvals.iter().flat_map(|a| a.votes.iter().map(|v| v.approver.clone())).collect()
}

#[cfg(test)]
mod tests;
