//! What one log entry says.
//!
//! Owns: `Record`, `RecordKind`, the record wire format (version 2).
//! Uses: `canonical` for result digests, `arguments::Redactor` for what is kept of arguments.
//! Must not: assign sequence numbers or times (the writer does), or touch storage.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::arguments::Redactor;
use super::canonical::{canonical, write_member};
use super::digest::{Seq, Sha256Digest};

/// Version of the record format; a change to the fields or their meaning bumps it.
/// 2: argument digests are keyed (`args_hmac`); version 1 records carry a plain
/// `args_sha256` and still read and verify.
pub const RECORD_VERSION: u32 = 2;

/// What happened. Written in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    GatewayStarted,
    SessionOpened,
    ToolChanged,
    /// A tool a downstream added while the gateway ran.
    ToolAdded,
    /// A stored version-1 tool fingerprint upgraded to version 2 (the tool is unchanged).
    FingerprintUpgraded,
    CallReceived,
    Decision,
    CallForwarded,
    CallCompleted,
    ApprovalRequested,
    ApprovalDecided,
    ApprovalSettled,
    /// A reload's policy asked more of a pending approval (quorum, approvers).
    ApprovalChanged,
    /// A request on a streamable-HTTP session by someone other than its owner, refused.
    SessionRefused,
    /// A downstream's request to a client (elicitation, sampling) that Airlock refused
    /// because it could not tell which session's call caused it.
    UpstreamRequestRefused,
    /// Written only by key rotation: names the new key, signed by the old one.
    KeyRotated,
    /// The gateway's configuration, manifests and policies as loaded at start or by a
    /// reload: their digests and what changed.
    ConfigLoaded,
    /// A reload refused because a file had problems; the running set stayed in force.
    ConfigRejected,
    /// An auditor opened the audit view: who, and which filter, call or report (no secrets).
    AuditViewed,
    /// A control-socket peer that was not admitted, or asked for an operator command it
    /// may not run.
    ControlRefused,
    /// A held call's MCP task changed status (created, completed, failed, cancelled).
    TaskStatus,
    /// Not a record: the `kind` of checkpoint lines in exports. `append` refuses it.
    Checkpoint,
}

impl RecordKind {
    /// The wire name, e.g. `call_received`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::GatewayStarted => "gateway_started",
            RecordKind::SessionOpened => "session_opened",
            RecordKind::ToolChanged => "tool_changed",
            RecordKind::ToolAdded => "tool_added",
            RecordKind::FingerprintUpgraded => "fingerprint_upgraded",
            RecordKind::CallReceived => "call_received",
            RecordKind::Decision => "decision",
            RecordKind::CallForwarded => "call_forwarded",
            RecordKind::CallCompleted => "call_completed",
            RecordKind::ApprovalRequested => "approval_requested",
            RecordKind::ApprovalDecided => "approval_decided",
            RecordKind::ApprovalSettled => "approval_settled",
            RecordKind::ApprovalChanged => "approval_changed",
            RecordKind::SessionRefused => "session_refused",
            RecordKind::UpstreamRequestRefused => "upstream_request_refused",
            RecordKind::KeyRotated => "key_rotated",
            RecordKind::ConfigLoaded => "config_loaded",
            RecordKind::ConfigRejected => "config_rejected",
            RecordKind::AuditViewed => "audit_viewed",
            RecordKind::ControlRefused => "control_refused",
            RecordKind::TaskStatus => "task_status",
            RecordKind::Checkpoint => "checkpoint",
        }
    }
}

/// One log entry. Optional fields that are `None` are left out of the stored form.
/// The stored form is `canonical(serde_json::to_value(record))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Record format version.
    pub v: u32,
    /// Assigned by the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// RFC 3339 UTC with microseconds; assigned by the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub kind: RecordKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The exposed tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Older records only: plain SHA-256 of the canonical (unredacted) arguments. New records
    /// carry `args_hmac` instead, because a plain digest gives redacted values away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<Sha256Digest>,
    /// HMAC-SHA256 (key `<data_dir>/args-key`) of the canonical (unredacted) arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_hmac: Option<Sha256Digest>,
    /// The arguments with every configured redaction applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_sha256: Option<Sha256Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Anything else, kind-specific (e.g. the new key of `key_rotated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// `decision` records: SHA-256 of the canonical policy set that decided the call
    /// (the one the last `config_loaded` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sha256: Option<Sha256Digest>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: impl Into<$ty>) -> Self {
                self.$name = Some(value.into());
                self
            }
        )*
    };
}

impl Record {
    /// An empty record of `kind`.
    pub fn new(kind: RecordKind) -> Record {
        Record {
            v: RECORD_VERSION,
            seq: None,
            time: None,
            kind,
            principal: None,
            session: None,
            call_id: None,
            tool: None,
            risk: None,
            decision: None,
            rule: None,
            reason: None,
            args_sha256: None,
            args_hmac: None,
            args: None,
            result_sha256: None,
            is_error: None,
            duration_us: None,
            approval_id: None,
            approver: None,
            channel: None,
            comment: None,
            detail: None,
            policy_sha256: None,
        }
    }

    setters! {
        principal: String, session: String, call_id: String, tool: String, risk: String,
        decision: String, rule: String, reason: String, result_sha256: Sha256Digest,
        is_error: bool, duration_us: u64, approval_id: String, approver: String,
        channel: String, comment: String, detail: Value, policy_sha256: Sha256Digest,
    }

    /// Sets the keyed argument digest (of the original canonical arguments) and stores a
    /// copy with the redactor's pointers replaced.
    #[must_use]
    pub fn with_args(mut self, args: &Value, redactor: &Redactor) -> Self {
        self.args_hmac = Some(redactor.digest(args).as_digest());
        self.args = Some(redactor.redact(args));
        self
    }

    /// Sets the result digest to SHA-256 of the canonical form of `result`.
    #[must_use]
    pub fn with_result(mut self, result: &Value) -> Self {
        self.result_sha256 = Some(Sha256Digest::of(&canonical(result)));
        self
    }

    /// Serialises everything but `seq` and `time` now, so the writer only splices those in.
    /// Moves the expensive part of canonicalisation off the single writer thread.
    pub(crate) fn prepare(&self) -> Prepared {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut parts = Prepared::default();
        if let Value::Object(map) = value {
            let mut entries: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(k, _)| *k != "seq" && *k != "time")
                .collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (key, item) in entries {
                let part = match key.as_bytes() {
                    k if k < b"seq".as_slice() => &mut parts.before_seq,
                    k if k < b"time".as_slice() => &mut parts.before_time,
                    _ => &mut parts.after_time,
                };
                if !part.is_empty() {
                    part.push(b',');
                }
                write_member(part, key, item);
            }
        }
        parts
    }

    /// The stored form.
    pub fn to_canonical(&self) -> Vec<u8> {
        // Serialising this struct to a Value cannot fail: every field is a plain type.
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        canonical(&value)
    }
}

/// A record's canonical members except `seq` and `time`, in three runs around them
/// (keys sort as `… < "seq" < … < "time" < …`).
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    before_seq: Vec<u8>,
    before_time: Vec<u8>,
    after_time: Vec<u8>,
}

impl Prepared {
    /// The canonical record with `seq` and `time` spliced in; equals
    /// `canonical(to_value(record with seq and time))`.
    pub(crate) fn finish(&self, seq: Seq, time: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.before_seq.len() + self.before_time.len() + self.after_time.len() + 64,
        );
        out.push(b'{');
        out.extend_from_slice(&self.before_seq);
        separate(&mut out);
        write_member(&mut out, "seq", &Value::from(seq.get()));
        if !self.before_time.is_empty() {
            out.push(b',');
            out.extend_from_slice(&self.before_time);
        }
        out.push(b',');
        write_member(&mut out, "time", &Value::from(time));
        if !self.after_time.is_empty() {
            out.push(b',');
            out.extend_from_slice(&self.after_time);
        }
        out.push(b'}');
        out
    }
}

/// A comma unless the object is still empty.
fn separate(out: &mut Vec<u8>) {
    if out.len() > 1 {
        out.push(b',');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::arguments::ArgsKey;
    use serde_json::json;

    #[test]
    fn redaction_replaces_pointers_but_digest_is_of_the_original() {
        let key = ArgsKey::generate().unwrap();
        let r = Redactor::new(&["/password".into(), "/nested/*/token".into(), "/a~1b".into()], key.clone())
            .unwrap();
        let args = json!({"password": "hunter2", "user": "bob", "nested": [{"token": "t1"}, {"x": 1}], "a/b": 5});
        let rec = Record::new(RecordKind::CallReceived).with_args(&args, &r);
        assert_eq!(
            rec.args,
            Some(
                json!({"password": "[redacted]", "user": "bob", "nested": [{"token": "[redacted]"}, {"x": 1}], "a/b": "[redacted]"})
            )
        );
        assert_eq!(rec.args_hmac, Some(key.digest(&args).as_digest()));
        assert_eq!(rec.args_sha256, None, "no plain digest of arguments in new records");
    }

    #[test]
    fn prepared_record_with_spliced_seq_and_time_is_its_canonical_form() {
        let r = Redactor::new(&["/password".into()], ArgsKey::generate().unwrap()).unwrap();
        let full = Record::new(RecordKind::Decision)
            .principal("p")
            .session("s")
            .tool("t")
            .rule("r")
            .reason("why")
            .with_args(&json!({"password": 1, "a": [1.5]}), &r)
            .detail(json!({"z": 1}));
        for rec in [full, Record::new(RecordKind::GatewayStarted)] {
            let mut stamped = rec.clone();
            stamped.seq = Some(Seq::new(77));
            stamped.time = Some("2026-01-01T00:00:00.000000Z".into());
            let spliced = rec
                .prepare()
                .finish(Seq::new(77), "2026-01-01T00:00:00.000000Z");
            assert_eq!(
                String::from_utf8(spliced).unwrap(),
                String::from_utf8(stamped.to_canonical()).unwrap()
            );
        }
    }

    #[test]
    fn kinds_are_snake_case_on_the_wire() {
        let rec = Record::new(RecordKind::ApprovalSettled).tool("fs__write");
        let text = String::from_utf8(rec.to_canonical()).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"approval_settled","tool":"fs__write","v":2}"#
        );
        assert_eq!(RecordKind::ApprovalSettled.as_str(), "approval_settled");
    }
}
