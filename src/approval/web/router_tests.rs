//! The page's routes without a socket (`oneshot`), against a real broker and audit log:
//! the decision path independent of how a call gets held.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use tower::ServiceExt;

use super::{Web, WebSettings};
use crate::approval::{Approval, Broker, HoldRequest, Kind, State};
use crate::audit::{AuditConfig, AuditLog, Durability, Sha256Digest};
use crate::identity::{AuthMethod, Authenticator, IdentityConfig, TokenEntry};
use crate::policy::{ApprovalSpec, Approver};

struct Fixture {
    _dir: tempfile::TempDir,
    broker: Broker,
    router: axum::Router,
}

fn token(name: &str, secret: &str, groups: &[&str]) -> TokenEntry {
    TokenEntry {
        name: name.into(),
        sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        ..TokenEntry::default()
    }
}

async fn fixture(tokens: Vec<TokenEntry>) -> Fixture {
    fixture_at("http://localhost", tokens).await
}

async fn fixture_at(public_url: &str, tokens: Vec<TokenEntry>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.durability = Durability::None;
    let audit = AuditLog::open(cfg).unwrap();
    let db = sled::open(dir.path().join("state")).unwrap();
    let broker = Broker::open(&db, audit, Duration::from_secs(600)).await.unwrap();
    let auth = Arc::new(Authenticator::new(IdentityConfig { tokens, ..IdentityConfig::default() }).unwrap());
    let settings =
        WebSettings { public_url: public_url.into(), oidc: None, session_lifetime: Duration::from_secs(60), idle_timeout: Duration::from_secs(60) };
    let web = Web::new(broker.clone(), auth, settings).unwrap();
    Fixture { _dir: dir, broker, router: web.router() }
}

async fn hold(broker: &Broker) -> Approval {
    let spec = ApprovalSpec { quorum: 1, approvers: vec![Approver::Group("sre".into())], channels: Vec::new(), timeout: None };
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
            risk: "critical",
            tool_fingerprint: Sha256Digest::of(b"tool"),
            args: &json!({"user": "<b>eve</b>", "role": "admin"}),
            rule: Some("grants"),
            reason: "grants need approval",
            spec: Some(&spec),
        })
        .await
        .unwrap()
        .0
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn form(path: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

fn page(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap()
}

async fn sign_in(router: &axum::Router, secret: &str) -> String {
    let (status, headers, body) = send(router, form("/approvals/sign-in", None, &format!("token={secret}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    headers[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned()
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn only_a_post_with_the_sessions_csrf_token_decides() {
    let f = fixture(vec![token("alice", "a-secret", &["sre"]), token("dave", "d-secret", &["sre"])]).await;
    let approval = hold(&f.broker).await;
    let alice = sign_in(&f.router, "a-secret").await;
    let dave = sign_in(&f.router, "d-secret").await;
    let detail = format!("/approvals/{}", approval.id);
    let (status, _, html) = send(&f.router, page(&detail, &alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;") && !html.contains("<b>eve"), "{html}");
    let alice_csrf = csrf_of(&html);
    let decision = format!("{detail}/decision");
    for body in ["decision=approve".to_owned(), "decision=approve&csrf=xyz".to_owned()] {
        let (status, _, _) = send(&f.router, form(&decision, Some(&alice), &body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    // Another session's token does not count for dave.
    let (status, _, _) = send(&f.router, form(&decision, Some(&dave), &format!("decision=approve&csrf={alice_csrf}"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send(&f.router, Request::get(&decision).header(header::COOKIE, &alice).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(f.broker.get(&approval.id).unwrap().state, State::Pending);
    assert!(f.broker.get(&approval.id).unwrap().votes.is_empty());

    let body = format!("decision=approve&comment=ok&csrf={alice_csrf}");
    let (status, headers, _) = send(&f.router, form(&decision, Some(&alice), &body)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], detail.as_str());
    let settled = f.broker.get(&approval.id).unwrap();
    assert_eq!(settled.state, State::Approved);
    assert_eq!((settled.votes[0].approver.as_str(), settled.votes[0].channel.as_str()), ("alice", "web"));
}

#[tokio::test]
async fn the_state_long_poll_answers_when_the_approval_changes() {
    let f = fixture(vec![token("alice", "a-secret", &["sre"])]).await;
    let approval = hold(&f.broker).await;
    let alice = sign_in(&f.router, "a-secret").await;
    let path = format!("/approvals/{}/state?known=pending.0", approval.id);
    let waiting = tokio::spawn({
        let router = f.router.clone();
        let alice = alice.clone();
        async move { send(&router, page(&path, &alice)).await }
    });
    f.broker.cancel(&approval.id, "test").await.unwrap();
    let (status, _, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["state"], "cancelled");
}

#[tokio::test]
async fn without_identity_nobody_signs_in_or_decides() {
    let f = fixture(Vec::new()).await;
    let approval = hold(&f.broker).await;
    let (status, _, html) = send(&f.router, Request::get("/approvals").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("anonymous caller never decides"), "{html}");
    let (status, headers, _) = send(&f.router, form("/approvals/sign-in", None, "token=anything")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(header::SET_COOKIE).is_none());
    let decision = format!("/approvals/{}/decision", approval.id);
    let (status, _, _) = send(&f.router, form(&decision, None, "decision=approve&csrf=x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.broker.get(&approval.id).unwrap().state, State::Pending);
}

#[tokio::test]
async fn a_deny_with_a_comment_settles_at_once() {
    let f = fixture(vec![token("alice", "a-secret", &["sre"])]).await;
    let approval = hold(&f.broker).await;
    let alice = sign_in(&f.router, "a-secret").await;
    let detail = format!("/approvals/{}", approval.id);
    let csrf = csrf_of(&send(&f.router, page(&detail, &alice)).await.2);
    let body = format!("decision=deny&comment=%3Ci%3Enot+today%3C%2Fi%3E&csrf={csrf}");
    let (status, _, _) = send(&f.router, form(&format!("{detail}/decision"), Some(&alice), &body)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let settled = f.broker.get(&approval.id).unwrap();
    assert_eq!(settled.state, State::Denied);
    let (_, _, html) = send(&f.router, page(&detail, &alice)).await;
    assert!(html.contains("&lt;i&gt;not today&lt;/i&gt;") && !html.contains("name=\"csrf\""), "{html}");
}

#[tokio::test]
async fn the_session_cookie_is_secure_behind_https() {
    let f = fixture_at("https://airlock.example.com", vec![token("alice", "a-secret", &[])]).await;
    let (_, headers, _) = send(&f.router, form("/approvals/sign-in", None, "token=a-secret")).await;
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
}
