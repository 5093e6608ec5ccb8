//! The state machine against a real audit log and state database in a temp dir.

use std::time::Duration;

use serde_json::json;

use super::seal::{Claims, SealError, Sealer};
use super::*;
use crate::audit::{AuditConfig, AuditLog, Durability, LogPaths, Sha256Digest, Trust, verify_dir};
use crate::identity::{AuthMethod, Caller, Holder, Person, Principal};
use crate::policy::{ApprovalSpec, Approver};

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    broker: Broker,
    audit: AuditLog,
}

async fn fixture(timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut cfg = AuditConfig::new(&path);
    cfg.durability = Durability::None;
    let audit = AuditLog::open(cfg).unwrap();
    let db = sled::open(path.join("state")).unwrap();
    let broker = Broker::open(&db, audit.clone(), timeout).await.unwrap();
    Fixture { _dir: dir, dir: path, broker, audit }
}

fn person(name: &str, groups: &[&str]) -> Caller {
    Caller::new(Principal::new(name).unwrap(), groups.iter().map(|g| (*g).to_owned()).collect(), AuthMethod::StaticToken)
}

fn forwarded() -> crate::audit::Record {
    crate::audit::Record::new(crate::audit::RecordKind::CallForwarded).call_id("c1")
}

fn spec(quorum: u32, approvers: Vec<Approver>) -> ApprovalSpec {
    ApprovalSpec { quorum, approvers, channels: Vec::new(), timeout: None }
}

async fn hold(broker: &Broker, kind: Kind, args: serde_json::Value, spec: &ApprovalSpec) -> Approval {
    broker
        .hold(HoldRequest {
            kind,
            call_id: "c1",
            session: "s1",
            caller: "carol",
            caller_via: AuthMethod::StaticToken,
            caller_person: None,
            tool: "demo__grant_role",
            server: "demo",
            risk: "high",
            tool_fingerprint: Sha256Digest::of(b"tool"),
            args: &args,
            rule: Some("grants"),
            reason: "grants need approval",
            spec: Some(spec),
        })
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn quorum_counts_each_approver_once_and_never_the_caller() {
    let f = fixture(Duration::from_secs(60)).await;
    let sre = spec(2, vec![Approver::Group("sre".into())]);
    let a = hold(&f.broker, Kind::Approve, json!({"user": "x"}), &sre).await;
    let carol = person("carol", &["sre"]);
    let err = f.broker.decide(&a.id, &carol, Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::NotEligible(NotEligible::SelfApproval)), "{err}");
    let outsider = person("mallory", &["dev"]);
    let err = f.broker.decide(&a.id, &outsider, Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::NotEligible(NotEligible::NotAnApprover(_))), "{err}");
    let bob = person("bob", &["sre"]);
    let first = f.broker.decide(&a.id, &bob, Verdict::Approve, None, "api").await.unwrap();
    assert!(first.counted);
    let again = f.broker.decide(&a.id, &bob, Verdict::Approve, None, "slack").await.unwrap();
    assert!(!again.counted);
    assert_eq!(again.approval.state, State::Pending);
    assert_eq!(again.approval.approvals(), 1);
    let dave = person("dave", &["sre"]);
    let done = f.broker.decide(&a.id, &dave, Verdict::Approve, Some("ok".into()), "web").await.unwrap();
    assert_eq!(done.approval.state, State::Approved);
    let other = f.broker.consume(&a.id, "c1", forwarded(), Some(Sha256Digest::of(b"tool")), "changed", &json!({"user": "y"})).await;
    assert!(other.is_err(), "an approval is for the arguments it was asked for");
    let receipt = f.broker.consume(&a.id, "c1", forwarded(), Some(Sha256Digest::of(b"tool")), "changed", &json!({"user": "x"})).await.unwrap();
    receipt.verify(&f.audit.public_key()).unwrap();
    assert_eq!(receipt.receipt.approvers, vec!["bob", "dave"]);
    assert_eq!(receipt.receipt.args_sha256, Sha256Digest::of(br#"{"user":"x"}"#).to_string(), "plain digest for the downstream");
    assert_ne!(a.args_hmac, receipt.receipt.args_sha256, "what people see is keyed");
    assert!(f.broker.consume(&a.id, "c2", forwarded(), Some(Sha256Digest::of(b"tool")), "changed", &json!({"user": "x"})).await.is_err(), "one approval, one execution");
    let anchor = f.audit.public_key();
    f.audit.clone().close().await.unwrap();
    let paths = LogPaths::new(&f.dir, None);
    assert!(verify_dir(&paths, Trust { anchor }).unwrap().is_ok());
}

#[tokio::test]
async fn any_deny_is_final_and_a_retry_reattaches() {
    let f = fixture(Duration::from_secs(60)).await;
    let sre = spec(2, Vec::new());
    let a = hold(&f.broker, Kind::Approve, json!({"user": "x"}), &sre).await;
    let again = hold(&f.broker, Kind::Approve, json!({"user": "x"}), &sre).await;
    assert_eq!(a.id, again.id, "same caller, tool and arguments re-attach");
    let other = hold(&f.broker, Kind::Approve, json!({"user": "y"}), &sre).await;
    assert_ne!(a.id, other.id, "other arguments need their own approval");
    f.broker.decide(&a.id, &person("bob", &[]), Verdict::Approve, None, "api").await.unwrap();
    let denied = f.broker.decide(&a.id, &person("eve", &[]), Verdict::Deny, Some("no".into()), "api").await.unwrap();
    assert_eq!(denied.approval.state, State::Denied);
    assert_eq!(denied.approval.denial().unwrap().comment.as_deref(), Some("no"));
    let late = f.broker.decide(&a.id, &person("zed", &[]), Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(late, DecideError::Settled(_)));
}

#[tokio::test]
async fn nothing_counts_after_expiry() {
    let f = fixture(Duration::from_millis(200)).await;
    let a = hold(&f.broker, Kind::Approve, json!({}), &spec(1, Vec::new())).await;
    let settled = f.broker.settled(&a.id).await.unwrap();
    assert_eq!(settled.state, State::Expired);
    let err = f.broker.decide(&a.id, &person("bob", &[]), Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::Expired(_)), "{err}");
}

#[tokio::test]
async fn confirm_is_for_the_caller_only_and_anonymous_never_decides() {
    let f = fixture(Duration::from_secs(60)).await;
    let a = hold(&f.broker, Kind::Confirm, json!({}), &spec(1, Vec::new())).await;
    let err = f.broker.decide(&a.id, &person("bob", &[]), Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::NotEligible(NotEligible::NotTheCaller)));
    let anon = Caller::new(Principal::new("carol").unwrap(), Vec::new(), AuthMethod::Anonymous);
    let err = f.broker.decide(&a.id, &anon, Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::NotEligible(NotEligible::Anonymous)));
    let ok = f.broker.decide(&a.id, &person("carol", &[]), Verdict::Approve, None, "elicitation").await.unwrap();
    assert_eq!(ok.approval.state, State::Approved);
}

#[tokio::test]
async fn out_of_band_confirmation_needs_a_person_with_another_credential() {
    let f = fixture(Duration::from_secs(60)).await;
    let a = hold(&f.broker, Kind::Confirm, json!({}), &spec(1, Vec::new())).await;
    // The agent's own token, over the API: refused, saying who can confirm.
    let err = f.broker.decide(&a.id, &person("carol", &[]), Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::NotEligible(NotEligible::NotAPerson)), "{err}");
    assert!(err.to_string().contains("human = true"), "{err}");
    // Even marked human, the credential that made the call cannot confirm it.
    let same = Caller { holder: Holder::Human, ..person("carol", &[]) };
    let err = f.broker.decide(&a.id, &same, Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::NotEligible(NotEligible::SameCredential)), "{err}");
    // The caller's person, signed in on the page with single sign-on, may.
    let b = f
        .broker
        .hold(HoldRequest {
            kind: Kind::Confirm,
            call_id: "c2",
            session: "s1",
            caller: "agent-carol",
            caller_via: AuthMethod::StaticToken,
            caller_person: Some("carol"),
            tool: "demo__grant_role",
            server: "demo",
            risk: "high",
            tool_fingerprint: Sha256Digest::of(b"tool"),
            args: &json!({"n": 2}),
            rule: None,
            reason: "confirm",
            spec: None,
        })
        .await
        .unwrap()
        .0;
    let sso = Caller {
        holder: Holder::Human,
        person: Some(Person::new("Carol").unwrap()),
        ..Caller::new(Principal::new("https://idp#c1").unwrap(), Vec::new(), AuthMethod::OidcSignIn)
    };
    let ok = f.broker.decide(&b.id, &sso, Verdict::Approve, None, "web").await.unwrap();
    assert_eq!(ok.approval.state, State::Approved);
}

#[tokio::test]
async fn one_persons_identities_count_once_and_as_the_caller() {
    let f = fixture(Duration::from_secs(60)).await;
    let a = hold(&f.broker, Kind::Approve, json!({}), &spec(2, Vec::new())).await;
    let linked = |name: &str, who: &str| Caller { person: Some(Person::new(who).unwrap()), ..person(name, &[]) };
    let first = f.broker.decide(&a.id, &linked("alice", "alice"), Verdict::Approve, None, "api").await.unwrap();
    assert!(first.counted);
    let second = f.broker.decide(&a.id, &linked("https://idp#a1", "alice"), Verdict::Approve, None, "web").await.unwrap();
    assert!(!second.counted, "the same person's second identity does not count");
    assert_eq!(second.approval.state, State::Pending);
    // A look-alike spelling of the caller is the caller.
    let err = f.broker.decide(&a.id, &person("CAROL", &[]), Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::NotEligible(NotEligible::SelfApproval)), "{err}");
}

#[tokio::test]
async fn restart_cancels_pending_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.durability = Durability::None;
    let id = {
        let audit = AuditLog::open(cfg.clone()).unwrap();
        let db = sled::open(dir.path().join("state")).unwrap();
        let broker = Broker::open(&db, audit.clone(), Duration::from_secs(60)).await.unwrap();
        let a = hold(&broker, Kind::Approve, json!({}), &spec(1, Vec::new())).await;
        drop(broker);
        drop(db);
        audit.close().await.unwrap();
        a.id
    };
    let audit = AuditLog::open(cfg).unwrap();
    let db = sled::open(dir.path().join("state")).unwrap();
    let broker = Broker::open(&db, audit.clone(), Duration::from_secs(60)).await.unwrap();
    let a = broker.get(&id).unwrap();
    assert_eq!(a.state, State::Cancelled);
    assert_eq!(a.settled_reason.as_deref(), Some("gateway restarted"));
}

#[tokio::test]
async fn sealed_state_refuses_alteration_and_expiry() {
    let sealer = Sealer::generate();
    let claims = Claims {
        purpose: super::seal::Purpose::Confirm,
        inner: None,
        approval_id: ApprovalId::generate(),
        caller: "carol".into(),
        tool: "t".into(),
        args_sha256: "00".into(),
        expires_ms: now_ms() + 60_000,
        nonce: "n".into(),
    };
    let state = sealer.seal(&claims);
    assert_eq!(sealer.open(&state, now_ms()).unwrap(), claims);
    let mut altered = state.clone();
    altered.insert(12, 'x');
    assert!(sealer.open(&altered, now_ms()).is_err());
    assert_eq!(sealer.open(&state, claims.expires_ms), Err(SealError::Expired));
    assert_eq!(Sealer::generate().open(&state, now_ms()), Err(SealError::BadTag));
}

#[test]
fn ids_parse_only_in_their_own_shape() {
    let id = ApprovalId::generate();
    assert_eq!(ApprovalId::parse(id.as_str()), Some(id));
    assert_eq!(ApprovalId::parse("ap-../../etc"), None);
    assert_eq!(ApprovalId::parse("ap-ABCDEFABCDEFABCDEFABCDEF"), None);
}

#[tokio::test]
async fn an_unused_approval_does_not_outlive_its_gateway_or_a_stricter_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.durability = Durability::None;
    let one = spec(1, Vec::new());
    let id = {
        let audit = AuditLog::open(cfg.clone()).unwrap();
        let db = sled::open(dir.path().join("state")).unwrap();
        let broker = Broker::open(&db, audit.clone(), Duration::from_secs(60)).await.unwrap();
        let a = hold(&broker, Kind::Approve, json!({"user": "x"}), &one).await;
        broker.decide(&a.id, &person("bob", &[]), Verdict::Approve, None, "api").await.unwrap();
        // A stricter policy does not re-attach to the approval the looser one got.
        let stricter = hold(&broker, Kind::Approve, json!({"user": "x"}), &spec(2, Vec::new())).await;
        assert_ne!(stricter.id, a.id);
        drop(broker);
        drop(db);
        audit.close().await.unwrap();
        a.id
    };
    let audit = AuditLog::open(cfg).unwrap();
    let db = sled::open(dir.path().join("state")).unwrap();
    let broker = Broker::open(&db, audit.clone(), Duration::from_secs(60)).await.unwrap();
    let again = hold(&broker, Kind::Approve, json!({"user": "x"}), &one).await;
    assert_ne!(again.id, id, "an approval whose call is gone does not carry over a restart");
    assert!(broker.consume(&id, "c9", forwarded(), Some(Sha256Digest::of(b"tool")), "changed", &json!({"user": "x"})).await.is_err());
}

#[tokio::test]
async fn default_approvers_apply_when_no_rule_names_any() {
    let f = fixture(Duration::from_secs(60)).await;
    let broker = f.broker.clone().with_default_approvers(vec!["group:approvers".to_owned()]);
    let a = hold(&broker, Kind::Approve, json!({}), &spec(1, Vec::new())).await;
    assert_eq!(a.approvers, vec!["group:approvers"]);
    let agent = person("other-agent", &["agents"]);
    let err = broker.decide(&a.id, &agent, Verdict::Approve, None, "api").await.unwrap_err();
    assert!(matches!(err, DecideError::NotEligible(NotEligible::NotAnApprover(_))), "{err}");
    let named = hold(&broker, Kind::Approve, json!({"x": 1}), &spec(1, vec![Approver::User("zoe".into())])).await;
    assert_eq!(named.approvers, vec!["user:zoe"], "a rule's approvers win");
}

#[tokio::test]
async fn approvals_settled_over_a_week_ago_leave_the_state_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.durability = Durability::None;
    let db = sled::open(dir.path().join("state")).unwrap();
    let tree = db.open_tree("approvals").unwrap();
    let mut old = super::sample_approval(json!({}), None, "old");
    old.state = State::Denied;
    old.settled_ms = Some(now_ms() - 8 * 24 * 3600 * 1000);
    let mut recent = super::sample_approval(json!({}), None, "recent");
    recent.id = ApprovalId::generate();
    recent.state = State::Approved;
    recent.settled_ms = Some(now_ms() - 3600 * 1000);
    for a in [&old, &recent] {
        tree.insert(a.id.as_str(), serde_json::to_vec(a).unwrap()).unwrap();
    }
    let audit = AuditLog::open(cfg).unwrap();
    let broker = Broker::open(&db, audit, Duration::from_secs(60)).await.unwrap();
    assert!(broker.get(&old.id).is_none());
    assert!(broker.get(&recent.id).is_some());
}
