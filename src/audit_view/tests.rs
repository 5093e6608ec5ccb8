use serde_json::{Value, json};

use super::calls::{CallFilter, chain, rows};

fn rec(seq: u64, kind: &str, extra: Value) -> Value {
    let mut r = json!({"seq": seq, "time": format!("2026-12-0{}T10:00:00.000000Z", 1 + seq / 10), "kind": kind});
    if let (Some(r), Value::Object(extra)) = (r.as_object_mut(), extra) {
        r.extend(extra);
    }
    r
}

fn log() -> Vec<Value> {
    vec![
        rec(1, "call_received", json!({"call_id": "c1", "tool": "demo__read", "principal": "agent"})),
        rec(2, "decision", json!({"call_id": "c1", "tool": "demo__read", "principal": "agent", "decision": "allow", "risk": "low"})),
        rec(3, "call_forwarded", json!({"call_id": "c1"})),
        rec(4, "call_completed", json!({"call_id": "c1"})),
        rec(11, "call_received", json!({"call_id": "c2", "tool": "demo__export", "principal": "agent"})),
        rec(12, "decision", json!({"call_id": "c2", "tool": "demo__export", "principal": "agent", "decision": "approve", "risk": "high"})),
        rec(13, "approval_requested", json!({"call_id": "c2", "approval_id": "ap-1"})),
        rec(14, "approval_decided", json!({"approval_id": "ap-1", "approver": "dana", "decision": "approve", "channel": "web"})),
        rec(15, "audit_viewed", json!({"principal": "erin", "detail": {"view": "calls"}})),
        rec(16, "approval_settled", json!({"approval_id": "ap-1", "call_id": "c2", "decision": "approved"})),
        rec(17, "call_forwarded", json!({"call_id": "c2", "approval_id": "ap-1"})),
        rec(18, "call_completed", json!({"call_id": "c2"})),
        rec(21, "decision", json!({"call_id": "c3", "tool": "demo__delete", "principal": "ops", "decision": "deny", "risk": "critical"})),
    ]
}

#[test]
fn calls_are_rows_with_their_outcome() {
    let rows = rows(&log());
    let got: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r.call_id.as_str(), r.decision.as_str(), r.outcome.as_str())).collect();
    assert_eq!(got, [("c1", "allow", "completed"), ("c2", "approve", "approved → completed"), ("c3", "deny", "denied")]);
}

#[test]
fn filters_pick_by_period_tool_caller_and_decision() {
    let rows = rows(&log());
    let ids = |f: &CallFilter| rows.iter().filter(|r| f.matches(r)).map(|r| r.call_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&CallFilter::default()).len(), 3);
    assert_eq!(ids(&CallFilter { from: Some("2026-12-02".into()), to: Some("2026-12-02".into()), ..CallFilter::default() }), ["c2"]);
    assert_eq!(ids(&CallFilter { tool: Some("demo__delete".into()), ..CallFilter::default() }), ["c3"]);
    assert_eq!(ids(&CallFilter { principal: Some("agent".into()), decision: Some("allow".into()), ..CallFilter::default() }), ["c1"]);
    assert!(ids(&CallFilter { principal: Some("nobody".into()), ..CallFilter::default() }).is_empty());
}

#[test]
fn a_chain_holds_the_votes_of_the_calls_hold_and_nothing_else() {
    let log = log();
    let seqs: Vec<u64> = chain(&log, "c2").iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(seqs, [11, 12, 13, 14, 16, 17, 18]);
}

#[test]
fn the_recorded_filter_names_only_what_was_given() {
    let f = CallFilter { tool: Some("demo__x".into()), ..CallFilter::default() };
    assert_eq!(f.to_value(), json!({"tool": "demo__x"}));
}

/// The view verifies the log the gateway is writing, while it writes: groups committed
/// during the check are left for the next one, never reported as tampering.
#[tokio::test]
async fn a_running_log_verifies_through_its_reader_while_records_are_appended() {
    use crate::audit::{AuditConfig, AuditLog, Durability, LogPaths, Record, RecordKind, Trust, verify_live};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = AuditConfig::new(dir.path());
    cfg.durability = Durability::None;
    let audit = AuditLog::open(cfg).expect("open");
    let paths = LogPaths::new(dir.path(), None);
    let writer = {
        let audit = audit.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let record = Record::new(RecordKind::AuditViewed).principal("erin").detail(json!({"view": "calls", "i": i}));
                let _recorded = audit.append(record).await.expect("append");
            }
        })
    };
    let mut checked = 0;
    while !writer.is_finished() || checked == 0 {
        let reader = audit.reader().expect("reader");
        let outcome = verify_live(&reader, &paths, Trust { anchor: audit.public_key() }).expect("readable");
        assert!(outcome.is_ok(), "a live log read as tampered: {:?}", outcome.err());
        checked += 1;
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer");
    let reader = audit.reader().expect("reader");
    let report = verify_live(&reader, &paths, Trust { anchor: audit.public_key() }).expect("readable").expect("intact");
    assert!(report.last.get() >= 60, "{report:?}");
}
