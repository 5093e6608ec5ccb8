//! The OCSF mapping of a stored record (`feed::Format::Ocsf::line`, what `log export
//! --format ocsf`, the follower and the `[audit.sink]` send): any bytes in, one event out
//! exactly when the bytes are a JSON object with a u64 `seq` and a string `kind`. The event
//! must be the same bytes every time, JSON, of one of the three classes with a consistent
//! `type_uid`, and carry the record's seq, its SHA-256 and the record itself.
//!
//! Input: first byte even, the rest is the stored record's bytes; odd, the rest drives
//! `arbitrary` to build a record of a known kind with the record's own fields.
#![no_main]

use airlock::audit::{Sha256Digest, canonical};
use airlock::feed::Format;
use airlock_fuzz::value;
use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const ORIGIN: &str = "airlock.example/log";

const KINDS: &[&str] = &[
    "gateway_started", "session_opened", "tool_changed", "tool_added", "fingerprint_upgraded", "call_received",
    "decision", "call_forwarded", "call_completed", "approval_requested", "approval_decided", "approval_settled",
    "approval_changed", "session_refused", "upstream_request_refused", "key_rotated", "config_loaded",
    "config_rejected", "audit_viewed", "control_refused", "task_status", "checkpoint", "call_", "approval_", "",
];
const FIELDS: &[&str] = &[
    "v", "time", "principal", "session", "call_id", "tool", "risk", "decision", "rule", "reason", "args_hmac", "args",
    "is_error", "duration_us", "approval_id", "approver", "channel", "comment", "detail", "policy_sha256",
];
const TEXT: &[&str] = &[
    "2026-01-01T00:00:00.000001Z", "2026-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999999Z", "2026-13-01T00:00:00Z", "2026-01-01", "deny", "allow", "approve", "hold",
    "high", "critical", "alice", "fs__write", "a1b2", "",
];

fn field(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    Ok(match u.int_in_range(0..=if depth == 0 { 1 } else { 4 })? {
        0 => Value::from(u.arbitrary::<u64>()?),
        1 => Value::from(*u.choose(TEXT)?),
        2 => {
            let mut detail = Map::new();
            for key in ["server", "new_key_id"] {
                if u.arbitrary()? {
                    detail.insert(key.into(), field(u, depth - 1)?);
                }
            }
            Value::Object(detail)
        }
        _ => value(u, 3)?,
    })
}

fn record(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut rec = Map::new();
    rec.insert("seq".into(), if u.ratio(7, 8)? { Value::from(u.arbitrary::<u64>()?) } else { value(u, 1)? });
    rec.insert("kind".into(), if u.ratio(7, 8)? { Value::from(*u.choose(KINDS)?) } else { value(u, 1)? });
    for _ in 0..u.int_in_range(0..=8)? {
        rec.insert((*u.choose(FIELDS)?).to_owned(), field(u, 3)?);
    }
    Ok(canonical(&Value::Object(rec)))
}

/// Levels of arrays and objects, as serde_json counts them against its limit of 128.
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

fn check(bytes: &[u8]) {
    let line = Format::Ocsf.line(bytes, ORIGIN);
    let rec = serde_json::from_slice::<Value>(bytes).ok();
    let seq = rec.as_ref().and_then(|r| r.get("seq")).and_then(Value::as_u64);
    let kind = rec.as_ref().and_then(|r| r.get("kind")).and_then(Value::as_str);
    assert_eq!(line.is_ok(), seq.is_some() && kind.is_some(), "mapped exactly the records");
    let Ok(line) = line else { return };
    assert_eq!(Format::Ocsf.line(bytes, ORIGIN).ok().as_deref(), Some(&line[..]), "the same event every time");
    let event: Value = match serde_json::from_slice(&line) {
        Ok(event) => event,
        // serde_json reads at most 127 nested levels and the event holds the record two
        // levels down (`unmapped.airlock`): a record 126 or 127 deep maps to an event that
        // only a reader without that limit takes (fuzz/README.md).
        Err(_) if rec.as_ref().is_some_and(|r| nesting(r) + 2 >= 128) => return,
        Err(error) => panic!("an event is not JSON: {error}"),
    };
    let class = event["class_uid"].as_u64().expect("a class_uid");
    assert!(matches!(class, 3004 | 6002 | 6003), "class {class}");
    let activity = event["activity_id"].as_u64().expect("an activity_id");
    assert_eq!(event["type_uid"].as_u64(), Some(class * 100 + activity));
    assert_eq!(event["metadata"]["sequence"].as_u64(), seq);
    assert_eq!(event["metadata"]["uid"].as_str(), Some(Sha256Digest::of(bytes).to_string().as_str()));
    assert_eq!(event["metadata"]["log_provider"].as_str(), Some(ORIGIN));
    assert_eq!(event["unmapped"]["airlock"]["kind"].as_str(), kind, "the record rides along");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        check(rest);
    } else if let Ok(bytes) = record(&mut Unstructured::new(rest)) {
        check(&bytes);
    }
});
