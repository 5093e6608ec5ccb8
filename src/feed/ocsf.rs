//! Audit records as OCSF 1.7.0 events, for SIEMs (Splunk, Elastic, Sentinel, Security Lake).
//!
//! Owns: the one mapping from a stored record to an OCSF event (`to_ocsf`), and the table of
//! which record kind becomes which OCSF class (README, "The audit trail as a feed").
//! Uses: `audit::Sha256Digest` for the record hash; nothing else.
//! Must not: lose what ties an event to the signed record: every event carries the record's
//! sequence number (`metadata.sequence`), its SHA-256 (`metadata.uid`), the log's origin and
//! the record itself, unchanged, in `unmapped.airlock`.
//!
//! The record is read as JSON, not as `audit::Record`, so kinds and fields a newer gateway
//! writes still map (as API Activity "Other") instead of failing the export.

use serde_json::{Map, Value, json};

use crate::audit::{Sha256Digest, canonical};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.7.0";

/// Why a line could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum OcsfError {
    /// The stored bytes are not a JSON object with a `seq` and a `kind`.
    #[error("record is not a JSON object with seq and kind: {0}")]
    NotARecord(String),
}

/// The OCSF classes records map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// 3004, category Identity & Access Management: approvals, tool definitions, keys.
    EntityManagement,
    /// 6002, category Application Activity: the gateway starting, its configuration.
    ApplicationLifecycle,
    /// 6003, category Application Activity: calls, decisions, sessions.
    ApiActivity,
}

impl Class {
    fn uid(self) -> u32 {
        match self {
            Class::EntityManagement => 3004,
            Class::ApplicationLifecycle => 6002,
            Class::ApiActivity => 6003,
        }
    }
    fn category(self) -> u32 {
        self.uid() / 1000
    }
}

/// OCSF `status_id`.
#[derive(Debug, Clone, Copy)]
enum Status {
    Unknown = 0,
    Success = 1,
    Failure = 2,
}

/// How one record kind maps: class, `activity_id` (99: Other) and whether it is a refusal.
fn class_of(kind: &str, rec: &Value) -> (Class, u32) {
    match kind {
        "gateway_started" => (Class::ApplicationLifecycle, 3), // Start
        "config_loaded" => match rec.pointer("/detail/reason").and_then(Value::as_str) {
            Some("reload") => (Class::ApplicationLifecycle, 8), // Update
            _ => (Class::ApplicationLifecycle, 3),
        },
        "approval_requested" => (Class::EntityManagement, 1), // Create
        "approval_decided" | "approval_settled" => (Class::EntityManagement, 3), // Update
        "tool_added" => (Class::EntityManagement, 1),
        "tool_changed" | "fingerprint_upgraded" | "key_rotated" => (Class::EntityManagement, 3),
        "audit_viewed" => (Class::ApiActivity, 2), // Read
        // call_received, decision, call_forwarded, call_completed, session_opened,
        // session_refused, upstream_request_refused, control_refused, task_status, and any
        // kind this version does not know.
        _ => (Class::ApiActivity, 99),
    }
}

/// `severity_id` from the record's risk: low 1 Informational … critical 4 High; a refusal
/// is at least 3 Medium.
fn severity(rec: &Value, status: Status) -> u32 {
    let by_risk = match rec.get("risk").and_then(Value::as_str) {
        Some("medium") => 2,
        Some("high") => 3,
        Some("critical") => 4,
        _ => 1,
    };
    match status {
        Status::Failure => by_risk.max(3),
        Status::Success | Status::Unknown => by_risk,
    }
}

/// Whether what the record reports succeeded, and why not.
fn status_of(kind: &str, rec: &Value) -> (Status, Option<String>) {
    let text = |k: &str| rec.get(k).and_then(Value::as_str);
    match kind {
        "decision" => match text("decision") {
            Some("allow") => (Status::Success, Some("allowed".into())),
            Some("deny") => (Status::Failure, Some(text("reason").unwrap_or("denied").into())),
            Some(other) => (Status::Unknown, Some(format!("held: {other}"))),
            None => (Status::Unknown, None),
        },
        "call_completed" => match rec.get("is_error").and_then(Value::as_bool) {
            Some(true) => (Status::Failure, Some("the tool reported an error".into())),
            _ => (Status::Success, None),
        },
        "approval_decided" | "approval_settled" => match text("decision") {
            Some("approved" | "approve") => (Status::Success, text("decision").map(Into::into)),
            Some(d) => (Status::Failure, Some(d.into())),
            None => (Status::Unknown, None),
        },
        "session_refused" | "upstream_request_refused" | "control_refused" => {
            (Status::Failure, text("reason").map(Into::into))
        }
        _ => (Status::Success, None),
    }
}

/// Maps one stored record (its canonical bytes) of the log named `origin` to an OCSF event.
/// The same record always gives the same event, byte for byte, in its canonical form.
pub fn to_ocsf(record: &[u8], origin: &str) -> Result<Value, OcsfError> {
    let rec: Value =
        serde_json::from_slice(record).map_err(|e| OcsfError::NotARecord(e.to_string()))?;
    let seq = rec.get("seq").and_then(Value::as_u64);
    let kind = rec.get("kind").and_then(Value::as_str);
    let (Some(seq), Some(kind)) = (seq, kind) else {
        return Err(OcsfError::NotARecord("no seq or kind".into()));
    };
    let (class, activity) = class_of(kind, &rec);
    let (status, detail) = status_of(kind, &rec);
    let mut ev = Map::new();
    ev.insert("class_uid".into(), class.uid().into());
    ev.insert("category_uid".into(), class.category().into());
    ev.insert("activity_id".into(), activity.into());
    if activity == 99 {
        // For "Other" the source's own name of the activity.
        ev.insert("activity_name".into(), kind.into());
    }
    ev.insert("type_uid".into(), (u64::from(class.uid()) * 100 + u64::from(activity)).into());
    ev.insert("severity_id".into(), severity(&rec, status).into());
    ev.insert("status_id".into(), (status as u32).into());
    if let Some(d) = detail {
        ev.insert("status_detail".into(), d.into());
    }
    ev.insert("time".into(), epoch_ms(&rec).into());
    ev.insert("message".into(), message(kind, &rec).into());
    ev.insert("metadata".into(), metadata(record, &rec, seq, origin));
    if class != Class::ApplicationLifecycle {
        // Application Lifecycle has no actor: the gateway itself starts.
        ev.insert("actor".into(), actor(&rec));
    }
    match class {
        Class::ApiActivity => {
            ev.insert("api".into(), api(kind, &rec));
            // Records do not hold the client's address; the source is the MCP client.
            ev.insert("src_endpoint".into(), json!({"svc_name": "mcp-client"}));
            if let Some(tool) = rec.get("tool").and_then(Value::as_str) {
                ev.insert("resources".into(), json!([{"name": tool, "type": "mcp_tool"}]));
            }
        }
        Class::EntityManagement => {
            ev.insert("entity".into(), entity(kind, &rec));
            if let Some(c) = rec.get("comment").and_then(Value::as_str) {
                ev.insert("comment".into(), c.into());
            }
        }
        Class::ApplicationLifecycle => {
            ev.insert("app".into(), product());
        }
    }
    if let Some(us) = rec.get("duration_us").and_then(Value::as_u64) {
        ev.insert("duration".into(), (us / 1000).into());
    }
    ev.insert("unmapped".into(), json!({"airlock": rec}));
    Ok(Value::Object(ev))
}

/// The record's `time` (RFC 3339) as milliseconds since the epoch; 0 when it has none.
fn epoch_ms(rec: &Value) -> u64 {
    rec.get("time")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn product() -> Value {
    json!({"name": "Airlock", "vendor_name": "Airlock", "version": env!("CARGO_PKG_VERSION")})
}

fn metadata(bytes: &[u8], rec: &Value, seq: u64, origin: &str) -> Value {
    let mut m = json!({
        "version": OCSF_VERSION,
        "product": product(),
        "log_name": "airlock-audit",
        "log_provider": origin,
        "log_version": rec.get("v").and_then(Value::as_u64).map(|v| v.to_string()),
        "sequence": seq,
        // The record's SHA-256: unique per record (it includes seq) and what
        // `airlock log prove SEQ` proves is in the signed tree.
        "uid": Sha256Digest::of(bytes).to_string(),
        "event_code": rec.get("kind").cloned().unwrap_or(Value::Null),
    });
    if let Some(t) = rec.get("time").and_then(Value::as_str) {
        m["original_time"] = t.into();
    }
    let correlation = rec.get("call_id").or_else(|| rec.get("approval_id"));
    if let Some(c) = correlation.and_then(Value::as_str) {
        m["correlation_uid"] = c.into();
    }
    if m["log_version"].is_null() {
        m.as_object_mut().map(|o| o.remove("log_version"));
    }
    m
}

fn actor(rec: &Value) -> Value {
    let text = |k: &str| rec.get(k).and_then(Value::as_str);
    let mut a = Map::new();
    // Who acted: the approver for a decision on an approval, else the caller.
    if let Some(name) = text("approver").or_else(|| text("principal")) {
        a.insert("user".into(), json!({"name": name}));
    }
    if let Some(s) = text("session") {
        a.insert("session".into(), json!({"uid": s}));
    }
    if a.is_empty() {
        a.insert("app_name".into(), "airlock".into());
    }
    Value::Object(a)
}

fn api(kind: &str, rec: &Value) -> Value {
    let operation = match kind {
        "session_opened" | "session_refused" => "initialize",
        "upstream_request_refused" => "elicitation/create",
        k if k.starts_with("call_") || k == "decision" => "tools/call",
        other => other,
    };
    let mut api = json!({"operation": operation});
    if let Some(server) = rec.pointer("/detail/server").and_then(Value::as_str) {
        api["service"] = json!({"name": server});
    }
    if let Some(call) = rec.get("call_id").and_then(Value::as_str) {
        api["request"] = json!({"uid": call});
    }
    api
}

fn entity(kind: &str, rec: &Value) -> Value {
    let text = |k: &str| rec.get(k).and_then(Value::as_str);
    match kind {
        k if k.starts_with("approval_") => {
            let mut e = json!({"type": "approval", "name": text("tool").unwrap_or("approval")});
            if let Some(id) = text("approval_id") {
                e["uid"] = id.into();
            }
            e
        }
        "key_rotated" => {
            let id = rec.pointer("/detail/new_key_id").and_then(Value::as_str);
            json!({"type": "signing_key", "name": id.unwrap_or("audit-key")})
        }
        _ => json!({"type": "mcp_tool", "name": text("tool").unwrap_or("tool")}),
    }
}

fn message(kind: &str, rec: &Value) -> String {
    let text = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or("?");
    match kind {
        "call_received" => format!("{} called {}", text("principal"), text("tool")),
        "decision" => format!("{} on {}: {}", text("decision"), text("tool"), text("reason")),
        "call_forwarded" => format!("{} forwarded", text("tool")),
        "call_completed" => format!("{} completed", text("tool")),
        "approval_requested" => format!("approval {} requested for {}", text("approval_id"), text("tool")),
        "approval_decided" => format!("{} decided {} on approval {}", text("approver"), text("decision"), text("approval_id")),
        "approval_settled" => format!("approval {} settled: {}", text("approval_id"), text("decision")),
        other => other.replace('_', " "),
    }
}

/// One OCSF event line (canonical JSON): the same record always gives the same bytes.
pub fn ocsf_line(record: &[u8], origin: &str) -> Result<Vec<u8>, OcsfError> {
    Ok(canonical(&to_ocsf(record, origin)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rec: Value) -> Value {
        to_ocsf(&canonical(&rec), "test").unwrap()
    }

    #[test]
    fn a_denied_decision_is_a_failed_api_activity_that_keeps_the_record() {
        let rec = json!({"v":2,"seq":7,"time":"2026-01-01T00:00:00.000001Z","kind":"decision",
            "principal":"alice","tool":"fs__write","risk":"high","decision":"deny","reason":"no"});
        let ev = map(rec.clone());
        assert_eq!(ev["class_uid"], 6003);
        assert_eq!(ev["type_uid"], 600399);
        assert_eq!(ev["status_id"], 2);
        assert_eq!(ev["severity_id"], 3);
        assert_eq!(ev["time"], 1_767_225_600_000u64);
        assert_eq!(ev["metadata"]["sequence"], 7);
        assert_eq!(ev["metadata"]["uid"], Sha256Digest::of(&canonical(&rec)).to_string());
        assert_eq!(ev["actor"]["user"]["name"], "alice");
        assert_eq!(ev["unmapped"]["airlock"], rec);
    }

    #[test]
    fn approvals_are_entity_management_and_the_approver_is_the_actor() {
        let ev = map(json!({"v":2,"seq":9,"kind":"approval_decided","principal":"bob",
            "approver":"carol","approval_id":"a1","decision":"approved"}));
        assert_eq!((ev["class_uid"].clone(), ev["activity_id"].clone()), (json!(3004), json!(3)));
        assert_eq!(ev["category_uid"], 3);
        assert_eq!(ev["actor"]["user"]["name"], "carol");
        assert_eq!(ev["entity"]["uid"], "a1");
    }

    #[test]
    fn unknown_kinds_still_map_and_non_records_are_refused() {
        let ev = map(json!({"v":3,"seq":1,"kind":"from_the_future"}));
        assert_eq!(ev["activity_name"], "from_the_future");
        assert_eq!(ev["actor"]["app_name"], "airlock");
        assert!(to_ocsf(b"[1]", "t").is_err());
        assert!(to_ocsf(br#"{"kind":"decision"}"#, "t").is_err());
    }
}
