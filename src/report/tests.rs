use serde_json::{Value, json};

use super::*;

fn verified() -> Verification {
    Verification {
        status: "intact",
        summary: "ok".into(),
        first_seq: 1,
        last_seq: 20,
        checkpoints: 5,
        keys: vec!["k1".into()],
        warnings: Vec::new(),
        reverify: "airlock log verify".into(),
    }
}

fn rec(seq: u64, time: &str, kind: &str, extra: Value) -> Value {
    let mut r = json!({"seq": seq, "time": time, "kind": kind, "v": 1});
    if let (Some(r), Value::Object(extra)) = (r.as_object_mut(), extra) {
        r.extend(extra);
    }
    r
}

/// One allowed call, one held call approved near its expiry after a policy change, one
/// high-risk call allowed, one call to a changed tool, and a day outside the period.
fn log() -> Vec<Value> {
    let d = "2026-12-03T10:00:";
    vec![
        rec(1, "2026-12-02T09:00:00.000000Z", "call_received", json!({"call_id": "c0", "tool": "demo__read_customer"})),
        rec(2, "2026-12-02T09:00:00.000000Z", "decision", json!({"call_id": "c0", "tool": "demo__read_customer", "decision": "allow", "risk": "low", "principal": "agent"})),
        rec(3, &format!("{d}00.000000Z"), "gateway_started", json!({"detail": {"version": "0.1.0", "boot": "b1"}})),
        rec(4, &format!("{d}01.000000Z"), "call_received", json!({"call_id": "c1", "tool": "demo__export_customers", "principal": "agent"})),
        rec(5, &format!("{d}01.000000Z"), "decision", json!({"call_id": "c1", "tool": "demo__export_customers", "decision": "approve", "risk": "high", "principal": "agent", "policy_sha256": "p1"})),
        rec(6, &format!("{d}01.000000Z"), "approval_requested", json!({"call_id": "c1", "approval_id": "ap-1", "tool": "demo__export_customers", "principal": "agent", "decision": "approve", "rule": "exports", "detail": {"quorum": 1, "expires_at": "2026-12-03T10:01:41Z", "server": "demo"}})),
        rec(7, &format!("{d}30.000000Z"), "decision", json!({"call_id": "cx", "tool": "demo__other", "decision": "allow", "risk": "low", "principal": "agent", "policy_sha256": "p2"})),
        rec(8, &format!("{d}95.000000Z").replace(":95.", ":59."), "call_received", json!({"call_id": "c2", "tool": "demo__grant_role"})),
        rec(9, "2026-12-03T10:01:35.000000Z", "approval_decided", json!({"approval_id": "ap-1", "approver": "dana", "channel": "slack", "decision": "approve", "comment": "DP-1142"})),
        rec(10, "2026-12-03T10:01:35.000000Z", "approval_settled", json!({"approval_id": "ap-1", "call_id": "c1", "decision": "approved", "reason": "1 of 1 approvals"})),
        rec(11, "2026-12-03T10:01:36.000000Z", "call_forwarded", json!({"call_id": "c1", "approval_id": "ap-1", "detail": {"server": "demo"}})),
        rec(12, "2026-12-03T10:01:37.000000Z", "call_completed", json!({"call_id": "c1"})),
        rec(13, "2026-12-03T10:02:00.000000Z", "decision", json!({"call_id": "c2", "tool": "demo__grant_role", "decision": "allow", "risk": "critical", "principal": "ops"})),
        rec(14, "2026-12-03T10:03:00.000000Z", "tool_changed", json!({"tool": "demo__grant_role", "detail": {"old": "a", "new": "b"}})),
        rec(15, "2026-12-03T10:04:00.000000Z", "decision", json!({"call_id": "c3", "tool": "demo__grant_role", "decision": "approve", "risk": "critical", "principal": "ops"})),
    ]
}

#[test]
fn totals_count_the_decisions_of_the_period_only() {
    let e = gather(&log(), Period::new("2026-12-03", "2026-12-03").expect("period"), verified(), "data".into());
    assert_eq!(e.totals.calls, 4, "{:?}", e.totals);
    assert_eq!(e.totals.by_decision.get("allow"), Some(&2));
    assert_eq!(e.totals.by_decision.get("approve"), Some(&2));
    assert_eq!(e.totals.by_principal.get("ops"), Some(&2));
    assert_eq!(e.totals.by_server.get("demo"), Some(&1));
    assert_eq!(e.restarts.len(), 1);
    assert_eq!(e.tool_changes.len(), 1);
    assert_eq!(e.policy_versions.len(), 2);
}

#[test]
fn a_held_call_has_its_votes_time_to_decision_and_chain() {
    let e = gather(&log(), Period::new("2026-12-03", "2026-12-03").expect("period"), verified(), "data".into());
    assert_eq!(e.approvals.len(), 1);
    let a = &e.approvals[0];
    assert_eq!((a.outcome.as_str(), a.quorum, a.rule.as_str()), ("approved", 1, "exports"));
    assert_eq!(a.votes.len(), 1);
    assert_eq!((a.votes[0].approver.as_str(), a.votes[0].channel.as_str()), ("dana", "slack"));
    assert_eq!(a.seconds_to_decision.map(|s| s.round()), Some(94.0));
    let seqs: Vec<u64> = a.chain.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![4, 5, 6, 10, 11, 12]);
}

#[test]
fn exceptions_name_what_an_auditor_asks_about_first() {
    let e = gather(&log(), Period::new("2026-12-03", "2026-12-03").expect("period"), verified(), "data".into());
    let x = &e.exceptions;
    assert_eq!(x.allowed_at_high_risk.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), ["c2"]);
    assert_eq!(x.used_while_changed.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), ["c3"]);
    assert_eq!(x.decided_near_expiry.len(), 1, "{:?}", x.decided_near_expiry);
    assert_eq!(x.decided_after_policy_change.len(), 1, "{:?}", x.decided_after_policy_change);
    // c3 was decided (approve) but nothing after: no result.
    assert!(x.without_outcome.iter().any(|w| w.starts_with("c2 ")), "{:?}", x.without_outcome);
}

#[test]
fn the_html_puts_a_failed_verification_first_and_escapes_log_values() {
    let mut records = log();
    records.push(rec(16, "2026-12-03T11:00:00.000000Z", "decision", json!({"call_id": "c9", "tool": "<script>alert(1)</script>", "decision": "allow", "risk": "low", "principal": "a\"b"})));
    let mut failed = verified();
    failed.status = "failed";
    failed.summary = "Verification failed at seq 7: edited".into();
    let e = gather(&records, Period::new("2026-12-01", "2026-12-31").expect("period"), failed, "data".into());
    let html = render_html(&e);
    let banner = html.find("LOG VERIFICATION FAILED").expect("failure banner");
    let summary = html.find("<h2>Summary").expect("summary");
    assert!(banner < summary, "the failure is not on top");
    assert!(!html.contains("<script>"), "markup from the log was rendered");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("<svg"), "no chart");
}

#[test]
fn periods_are_checked() {
    assert!(Period::new("2026-12-01", "2026-12-31").is_ok());
    assert!(Period::new("2026-12-31", "2026-12-01").is_err());
    assert!(Period::new("12/01/2026", "2026-12-31").is_err());
    assert!(Period::new("2026-13-01", "2026-12-31").is_err());
}

/// `config_loaded` as the reload helper records it (preamble format), at `seq`.
fn loaded(seq: u64, time: &str, reason: &str, policy: &str, changed: &[&str]) -> Value {
    rec(seq, time, "config_loaded", json!({"detail": {
        "reason": reason, "policy_sha256": policy, "config_sha256": format!("cfg-{seq}"),
        "manifests": {"demo": "m1"}, "policies": {"default.toml": format!("{policy}-file")}, "changed": changed,
    }}))
}

fn decided(seq: u64, time: &str, call: &str, policy: &str) -> Value {
    rec(seq, time, "decision", json!({"call_id": call, "tool": "demo__export_customers", "decision": "approve", "risk": "high", "principal": "agent", "policy_sha256": policy}))
}

fn hold(seq: u64, time: &str, call: &str, id: &str) -> Value {
    rec(seq, time, "approval_requested", json!({"call_id": call, "approval_id": id, "tool": "demo__export_customers", "principal": "agent", "decision": "approve", "detail": {"quorum": 1, "expires_at": "2026-12-03T23:00:00Z"}}))
}

fn settled(seq: u64, time: &str, call: &str, id: &str) -> Value {
    rec(seq, time, "approval_settled", json!({"approval_id": id, "call_id": call, "decision": "approved", "reason": "1 of 1 approvals"}))
}

/// A start under policy A the day before, a hold opened under A, a reload that changes only
/// a manifest (same policy: no new version), a reload to policy B while the hold waits, the
/// hold approved under B, a second hold opened and settled under B, and a restart under B.
fn reloaded_log() -> Vec<Value> {
    vec![
        loaded(1, "2026-12-02T08:00:00.000000Z", "start", "aaaa1111", &[]),
        decided(2, "2026-12-03T09:00:00.000000Z", "c1", "aaaa1111"),
        hold(3, "2026-12-03T09:00:00.000000Z", "c1", "ap-1"),
        loaded(4, "2026-12-03T09:00:10.000000Z", "reload", "aaaa1111", &["tool-manifests/demo.toml"]),
        loaded(5, "2026-12-03T09:00:20.000000Z", "reload", "bbbb2222", &["policies/default.toml"]),
        settled(6, "2026-12-03T09:00:30.000000Z", "c1", "ap-1"),
        decided(7, "2026-12-03T09:01:00.000000Z", "c2", "bbbb2222"),
        hold(8, "2026-12-03T09:01:00.000000Z", "c2", "ap-2"),
        settled(9, "2026-12-03T09:01:30.000000Z", "c2", "ap-2"),
        loaded(10, "2026-12-03T10:00:00.000000Z", "start", "bbbb2222", &[]),
    ]
}

#[test]
fn policy_versions_come_from_config_loaded_with_when_they_changed() {
    let e = gather(&reloaded_log(), Period::new("2026-12-03", "2026-12-03").expect("period"), verified(), "data".into());
    let v = &e.policy_versions;
    assert_eq!(v.len(), 2, "a reload with the same policy or a restart is no new version: {v:#?}");
    assert_eq!((v[0].policy_sha256.as_str(), v[0].reason.as_str(), v[0].seq), ("aaaa1111", "start", 1));
    assert_eq!((v[0].until.as_str(), v[0].decisions), ("2026-12-03T09:00:20.000000Z", 1), "in force from before the period");
    assert_eq!((v[1].policy_sha256.as_str(), v[1].reason.as_str(), v[1].seq, v[1].decisions), ("bbbb2222", "reload", 5, 1));
    assert_eq!(v[1].changed, ["policies/default.toml"]);
    assert_eq!(v[1].policies.get("default.toml").map(String::as_str), Some("bbbb2222-file"));
    assert_eq!((v[1].config_sha256.as_str(), v[1].until.as_str()), ("cfg-5", ""));
    let by_id = |id: &str| e.approvals.iter().find(|a| a.approval_id == id).map(|a| a.policy_sha256.clone());
    assert_eq!(by_id("ap-1").as_deref(), Some("bbbb2222"), "settled under the new policy");
}

#[test]
fn a_hold_decided_after_a_policy_change_is_an_exception_and_one_opened_after_it_is_not() {
    let e = gather(&reloaded_log(), Period::new("2026-12-03", "2026-12-03").expect("period"), verified(), "data".into());
    let x = &e.exceptions.decided_after_policy_change;
    assert_eq!(x.len(), 1, "{x:?}");
    assert!(x[0].starts_with("ap-1 ") && x[0].contains("seq 5") && x[0].contains("bbbb2222"), "{x:?}");
    let html = render_html(&e);
    assert!(html.contains("Policy versions in force (2)") && html.contains("policies/default.toml"), "policy table");
}

#[test]
fn a_period_after_the_last_change_shows_only_the_version_in_force() {
    let e = gather(&reloaded_log(), Period::new("2026-12-04", "2026-12-05").expect("period"), verified(), "data".into());
    let shas: Vec<&str> = e.policy_versions.iter().map(|v| v.policy_sha256.as_str()).collect();
    assert_eq!(shas, ["bbbb2222"]);
    assert_eq!(e.policy_versions[0].decisions, 0);
}
