//! The API router against a real broker, through `oneshot` (no socket).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{Identify, router};
use crate::approval::{Approval, Broker, HoldRequest, Kind, State};
use crate::audit::{AuditConfig, AuditLog, Durability, Sha256Digest};
use crate::identity::{AuthMethod, Authenticator, IdentityConfig, TokenEntry};
use crate::policy::{ApprovalSpec, Approver, Channel};

struct Fixture {
    _dir: tempfile::TempDir,
    broker: Broker,
    app: axum::Router,
}

const TOKENS: [(&str, &str, &str); 4] =
    [("carol", "tok-carol", "dev"), ("bob", "tok-bob", "sre"), ("dave", "tok-dave", "sre"), ("mallory", "tok-mallory", "dev")];

async fn fixture(timeout: Duration, identity: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.durability = Durability::None;
    let audit = AuditLog::open(cfg).unwrap();
    let db = sled::open(dir.path().join("state")).unwrap();
    let broker = Broker::open(&db, audit, timeout).await.unwrap();
    let tokens = if identity {
        TOKENS
            .iter()
            .map(|(name, token, group)| TokenEntry {
                name: (*name).to_owned(),
                sha256: Sha256Digest::of(token.as_bytes()).to_string(),
                groups: vec![(*group).to_owned()],
                ..TokenEntry::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    let authenticator = Authenticator::new(IdentityConfig { tokens, ..IdentityConfig::default() }).unwrap();
    let identify: Arc<dyn Identify> = Arc::new(authenticator);
    let app = router(broker.clone(), identify);
    Fixture { _dir: dir, broker, app }
}

/// A hold by carol; `user` varies the arguments (the same arguments re-attach).
async fn hold_for(broker: &Broker, user: &str, quorum: u32, channels: Vec<Channel>) -> Approval {
    let spec = ApprovalSpec { quorum, approvers: vec![Approver::Group("sre".into())], channels, timeout: None };
    broker
        .hold(HoldRequest {
            kind: Kind::Approve,
            call_id: "c1",
            session: "s1",
            caller: "carol",
            caller_via: AuthMethod::StaticToken,
            caller_person: None,
            tool: "demo__grant_role",
            server: "demo",
            risk: "high",
            tool_fingerprint: Sha256Digest::of(b"tool"),
            args: &json!({"user": user, "role": "admin"}),
            rule: Some("grants"),
            reason: "grants need approval",
            spec: Some(&spec),
        })
        .await
        .unwrap()
        .0
}

async fn hold(broker: &Broker, quorum: u32, channels: Vec<Channel>) -> Approval {
    hold_for(broker, "x", quorum, channels).await
}

async fn send(app: &axum::Router, method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn decision_uri(a: &Approval) -> String {
    format!("/api/v1/approvals/{}/decision", a.id)
}

#[tokio::test]
async fn anonymous_is_refused_on_every_route_when_no_identity_is_configured() {
    let f = fixture(Duration::from_secs(60), false).await;
    let a = hold(&f.broker, 1, Vec::new()).await;
    for (method, uri) in [
        ("GET", "/api/v1/approvals".to_owned()),
        ("GET", format!("/api/v1/approvals/{}", a.id)),
        ("POST", decision_uri(&a)),
    ] {
        let (status, body) = send(&f.app, method, &uri, Some("anything"), Some(r#"{"decision":"approve"}"#)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert!(body["error"].as_str().unwrap().contains("no identity is configured"), "{body}");
    }
    assert_eq!(f.broker.get(&a.id).unwrap().state, State::Pending);
}

#[tokio::test]
async fn list_filters_by_state_and_rejects_unknown_states() {
    let f = fixture(Duration::from_secs(60), true).await;
    let a = hold(&f.broker, 1, Vec::new()).await;
    let (status, _) = send(&f.app, "GET", "/api/v1/approvals", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send(&f.app, "GET", "/api/v1/approvals?state=pending", Some("tok-bob"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["approvals"][0]["id"], a.id.as_str());
    let (_, body) = send(&f.app, "GET", "/api/v1/approvals?state=approved", Some("tok-bob"), None).await;
    assert_eq!(body["approvals"], json!([]));
    let (status, body) = send(&f.app, "GET", "/api/v1/approvals?state=open", Some("tok-bob"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("unknown state \"open\""), "{body}");
    let (status, body) = send(&f.app, "GET", &format!("/api/v1/approvals/{}", a.id), Some("tok-bob"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["args"], json!({"user": "x", "role": "admin"}));
    for missing in ["ap-000000000000000000000000", "not-an-id", "ap-..%2F..%2Fetc"] {
        let (status, _) = send(&f.app, "GET", &format!("/api/v1/approvals/{missing}"), Some("tok-bob"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
}

#[tokio::test]
async fn caller_cannot_approve_own_call_and_outsiders_cannot_either() {
    let f = fixture(Duration::from_secs(60), true).await;
    let a = hold(&f.broker, 1, Vec::new()).await;
    // The caller sees the hold and is told she may not approve it; an outsider may not see
    // it, so deciding reads as not found, exactly as for an id that does not exist.
    let (status, body) = send(&f.app, "POST", &decision_uri(&a), Some("tok-carol"), Some(r#"{"decision":"approve"}"#)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].is_string());
    let (status, body) = send(&f.app, "POST", &decision_uri(&a), Some("tok-mallory"), Some(r#"{"decision":"approve"}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], format!("no approval {}", a.id));
    let after = f.broker.get(&a.id).unwrap();
    assert_eq!(after.state, State::Pending);
    assert!(after.votes.is_empty());
}

#[tokio::test]
async fn same_approver_twice_counts_once_and_deny_is_final() {
    let f = fixture(Duration::from_secs(60), true).await;
    let a = hold(&f.broker, 2, Vec::new()).await;
    let approve = r#"{"decision":"approve","comment":"looks fine"}"#;
    let (status, body) = send(&f.app, "POST", &decision_uri(&a), Some("tok-bob"), Some(approve)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["counted"], true);
    let (status, body) = send(&f.app, "POST", &decision_uri(&a), Some("tok-bob"), Some(approve)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["counted"], false);
    assert_eq!(body["approval"]["state"], "pending");
    let deny = r#"{"decision":"deny","comment":"not during the freeze"}"#;
    let (status, body) = send(&f.app, "POST", &decision_uri(&a), Some("tok-dave"), Some(deny)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval"]["state"], "denied");
    assert_eq!(body["approval"]["votes"][1]["channel"], "api");
    assert_eq!(body["approval"]["votes"][1]["comment"], "not during the freeze");
    let (status, body) = send(&f.app, "POST", &decision_uri(&a), Some("tok-dave"), Some(approve)).await;
    assert_eq!(status, StatusCode::OK, "a repeated decision returns the current state: {body}");
    assert_eq!(body["counted"], false);
}

#[tokio::test]
async fn settled_and_expired_approvals_answer_conflict_with_their_state() {
    let f = fixture(Duration::from_secs(60), true).await;
    let a = hold(&f.broker, 1, Vec::new()).await;
    let approve = r#"{"decision":"approve"}"#;
    let (status, _) = send(&f.app, "POST", &decision_uri(&a), Some("tok-bob"), Some(approve)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&f.app, "POST", &decision_uri(&a), Some("tok-dave"), Some(approve)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["approval"]["state"], "approved");

    let f = fixture(Duration::from_millis(1), true).await;
    let a = hold(&f.broker, 1, Vec::new()).await;
    f.broker.settled(&a.id).await.unwrap();
    let (status, body) = send(&f.app, "POST", &decision_uri(&a), Some("tok-bob"), Some(approve)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["approval"]["state"], "expired");
    assert!(body["error"].as_str().unwrap().contains("expired"), "{body}");
}

#[tokio::test]
async fn malformed_bodies_and_other_channels_are_refused_without_a_vote() {
    let f = fixture(Duration::from_secs(60), true).await;
    let a = hold(&f.broker, 1, Vec::new()).await;
    for body in ["not json", r#"{"decision":"maybe"}"#, r#"{"comment":"x"}"#, r#"{"decision":"approve","extra":1}"#] {
        let (status, answer) = send(&f.app, "POST", &decision_uri(&a), Some("tok-bob"), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    let (status, _) =
        send(&f.app, "POST", "/api/v1/approvals/nope/decision", Some("tok-bob"), Some(r#"{"decision":"approve"}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let slack_only = hold_for(&f.broker, "y", 1, vec![Channel::Slack]).await;
    let (status, body) =
        send(&f.app, "POST", &decision_uri(&slack_only), Some("tok-bob"), Some(r#"{"decision":"approve"}"#)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(f.broker.get(&a.id).unwrap().votes.is_empty());
    assert!(f.broker.get(&slack_only.id).unwrap().votes.is_empty());
}
