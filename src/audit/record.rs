//! What one log entry says.
//!
//! Owns: `Record`, `RecordKind`, the record wire format (version 2).
//! Uses: `canonical` for result digests, `arguments::Redactor` for what is kept of arguments.
//! Must not: assign sequence numbers or times (the writer does), or touch storage.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::arguments::Redactor;
use super::canonical::{canonical, write_string, write_u64, write_value};
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
    /// Moves the expensive part of canonicalisation off the single writer thread. Written
    /// member by member in key order, without building a `serde_json::Value` of the record
    /// (that deep-copied `args` and `detail` for every record); a test holds it equal to
    /// `canonical(to_value(record))`, the stored form's definition.
    pub(crate) fn prepare(&self) -> Prepared {
        let mut parts = Prepared::default();
        // Keys in byte order: `… < "seq" < "session" < "time" < "tool" < "v"`.
        let mut run = Run::new(&mut parts.before_seq);
        run.text("approval_id", &self.approval_id);
        run.text("approver", &self.approver);
        run.json("args", &self.args);
        run.digest("args_hmac", &self.args_hmac);
        run.digest("args_sha256", &self.args_sha256);
        run.text("call_id", &self.call_id);
        run.text("channel", &self.channel);
        run.text("comment", &self.comment);
        run.text("decision", &self.decision);
        run.json("detail", &self.detail);
        if let Some(us) = self.duration_us {
            run.member("duration_us", |out| write_u64(out, us));
        }
        if let Some(is_error) = self.is_error {
            run.member("is_error", |out| out.extend_from_slice(if is_error { b"true" } else { b"false" }));
        }
        run.member("kind", |out| write_string(out, self.kind.as_str()));
        run.digest("policy_sha256", &self.policy_sha256);
        run.text("principal", &self.principal);
        run.text("reason", &self.reason);
        run.digest("result_sha256", &self.result_sha256);
        run.text("risk", &self.risk);
        run.text("rule", &self.rule);
        Run::new(&mut parts.before_time).text("session", &self.session);
        let mut run = Run::new(&mut parts.after_time);
        run.text("tool", &self.tool);
        run.member("v", |out| write_u64(out, u64::from(self.v)));
        parts
    }

    /// The stored form.
    pub fn to_canonical(&self) -> Vec<u8> {
        self.prepare().finish_with(self.seq, self.time.as_deref())
    }
}

/// Canonical `"key":value` members appended to `out` after `start`, comma-separated.
struct Run<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Run<'a> {
    /// A run of its own: `out` holds nothing else.
    fn new(out: &'a mut Vec<u8>) -> Run<'a> {
        Run { out, start: 0 }
    }

    /// A run continuing what `out` holds (an object's opening brace).
    fn after(out: &'a mut Vec<u8>) -> Run<'a> {
        let start = out.len();
        Run { out, start }
    }

    fn separate(&mut self) {
        if self.out.len() > self.start {
            self.out.push(b',');
        }
    }

    fn member(&mut self, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
        self.separate();
        write_string(self.out, key);
        self.out.push(b':');
        value(self.out);
    }

    /// Members another run wrote.
    fn splice(&mut self, members: &[u8]) {
        if !members.is_empty() {
            self.separate();
            self.out.extend_from_slice(members);
        }
    }

    fn text(&mut self, key: &str, value: &Option<String>) {
        if let Some(text) = value {
            self.member(key, |out| write_string(out, text));
        }
    }

    fn json(&mut self, key: &str, value: &Option<Value>) {
        if let Some(value) = value {
            self.member(key, |out| write_value(out, value));
        }
    }

    /// A digest as its serde form: lowercase hex in a string.
    fn digest(&mut self, key: &str, value: &Option<Sha256Digest>) {
        if let Some(digest) = value {
            self.member(key, |out| {
                let mut hex = [0u8; 64];
                // 32 bytes always fit 64 hex digits.
                if hex::encode_to_slice(digest.as_bytes(), &mut hex).is_ok() {
                    out.push(b'"');
                    out.extend_from_slice(&hex);
                    out.push(b'"');
                }
            });
        }
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
        self.finish_with(Some(seq), Some(time))
    }

    fn finish_with(&self, seq: Option<Seq>, time: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.before_seq.len() + self.before_time.len() + self.after_time.len() + 64,
        );
        out.push(b'{');
        let mut run = Run::after(&mut out);
        run.splice(&self.before_seq);
        if let Some(seq) = seq {
            run.member("seq", |out| write_u64(out, seq.get()));
        }
        run.splice(&self.before_time);
        if let Some(time) = time {
            run.member("time", |out| write_string(out, time));
        }
        run.splice(&self.after_time);
        out.push(b'}');
        out
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

    /// The stored form's definition, which `prepare` and `to_canonical` write directly.
    fn defined(rec: &Record) -> String {
        String::from_utf8(canonical(&serde_json::to_value(rec).unwrap())).unwrap()
    }

    /// A record with every field set, strings that need escaping and numbers of each kind.
    fn every_field() -> Record {
        let r = Redactor::new(&["/password".into()], ArgsKey::generate().unwrap()).unwrap();
        let mut rec = Record::new(RecordKind::Decision)
            .principal("p\"q")
            .session("s\n")
            .call_id("c")
            .tool("t\u{1}é")
            .risk("high")
            .decision("approve")
            .rule("r")
            .reason("why")
            .with_args(&json!({"password": 1, "z": [1.5, -3, 1.0, {"b": null, "a": true}], "a": "x"}), &r)
            .with_result(&json!({"ok": 1}))
            .is_error(false)
            .duration_us(u64::MAX)
            .approval_id("a1")
            .approver("bob")
            .channel("slack")
            .comment("fine")
            .detail(json!({"z": 1, "y": [-0.0, 1e-7]}))
            .policy_sha256(Sha256Digest::of(b"policy"));
        rec.args_sha256 = Some(Sha256Digest::of(b"old"));
        rec
    }

    #[test]
    fn the_stored_form_is_canonical_json_of_the_record() {
        let mut records = vec![every_field(), Record::new(RecordKind::GatewayStarted), Record::new(RecordKind::CallCompleted).is_error(true)];
        let mut stamped = every_field();
        stamped.seq = Some(Seq::new(1));
        stamped.time = Some("2026-01-01T00:00:00.000000Z".into());
        records.push(stamped);
        let mut seq_only = Record::new(RecordKind::SessionOpened).session("s");
        seq_only.seq = Some(Seq::new(9));
        records.push(seq_only);
        for rec in records {
            assert_eq!(String::from_utf8(rec.to_canonical()).unwrap(), defined(&rec));
        }
    }

    #[test]
    fn prepared_record_with_spliced_seq_and_time_is_its_canonical_form() {
        let only_tool = Record::new(RecordKind::ToolAdded).tool("t");
        for rec in [every_field(), Record::new(RecordKind::GatewayStarted), only_tool] {
            let mut stamped = rec.clone();
            stamped.seq = Some(Seq::new(77));
            stamped.time = Some("2026-01-01T00:00:00.000000Z".into());
            let spliced = rec
                .prepare()
                .finish(Seq::new(77), "2026-01-01T00:00:00.000000Z");
            assert_eq!(String::from_utf8(spliced).unwrap(), defined(&stamped));
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
