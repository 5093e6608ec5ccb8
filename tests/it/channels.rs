//! Slack and Teams through the real binary. A local axum server stands in for Slack's
//! Web API and for a Teams Workflows webhook; clicks are signed here the way Slack signs
//! them, with the shared secret.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::util::{HttpGateway, Setup, TestClient, airlock, call, eventually, text_of};

pub(crate) const BOT_TOKEN: &str = "xoxb-test-token";
pub(crate) const SIGNING_SECRET: &str = "test-signing-secret-0123456789";
/// Long enough that a slow machine never sees a hold expire: these tests are not about time.
const WAIT: Duration = Duration::from_secs(60);

/// One request the fake received.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// `chat.postMessage`, … or `teams`.
    pub(crate) method: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: Value,
}

/// The stand-in for Slack's Web API (`/api/{method}`) and a Teams webhook (`/teams`).
#[derive(Clone)]
pub(crate) struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// How many `chat.postMessage` calls still get a 429 before one succeeds.
    throttle: Arc<AtomicU32>,
}

impl Fake {
    pub(crate) async fn start() -> (Fake, String) {
        let fake = Fake { seen: Arc::default(), throttle: Arc::default() };
        let router = axum::Router::new()
            .route("/api/{method}", axum::routing::post(slack_api))
            .route("/teams", axum::routing::post(teams_hook))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (fake, url)
    }

    pub(crate) fn all(&self, method: &str) -> Vec<Seen> {
        self.seen.lock().expect("lock").iter().filter(|s| s.method == method).cloned().collect()
    }

    /// Waits for the `n`th (1-based) request to `method`.
    pub(crate) async fn nth(&self, method: &str, n: usize) -> Seen {
        assert!(eventually(WAIT, || self.all(method).len() >= n).await, "no {method} #{n}; saw {:#?}", self.seen.lock().unwrap());
        self.all(method)[n - 1].clone()
    }
}

async fn slack_api(State(fake): State<Fake>, UrlPath(method): UrlPath<String>, headers: HeaderMap, body: String) -> Response {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    fake.seen.lock().expect("lock").push(Seen { method: method.clone(), authorization, body: body.clone() });
    if method == "chat.postMessage" && fake.throttle.load(Ordering::SeqCst) > 0 {
        fake.throttle.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response();
    }
    let answer = match method.as_str() {
        "chat.postMessage" => json!({"ok": true, "channel": "C0APPROVALS", "ts": "1700000000.000100"}),
        _ => json!({"ok": true}),
    };
    axum::Json(answer).into_response()
}

async fn teams_hook(State(fake): State<Fake>, body: String) -> StatusCode {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    fake.seen.lock().expect("lock").push(Seen { method: "teams".into(), authorization: None, body });
    StatusCode::ACCEPTED
}

/// A setup whose Slack (and optionally Teams) point at the fake. `U0ALICE` is alice and
/// `U0BOB` is bob; anyone else is unmapped.
fn setup(fake_url: &str, teams: bool) -> Setup {
    let mut config = format!(
        "[gateway]\ndata_dir = \"data\"\n\n[approvals]\ntimeout = \"30m\"\n\n[approvals.slack]\n\
         bot_token_env = \"TEST_SLACK_BOT_TOKEN\"\nsigning_secret_env = \"TEST_SLACK_SIGNING_SECRET\"\n\
         channel = \"C0APPROVALS\"\napi_base = \"{fake_url}/api\"\nusers = {{ U0ALICE = \"alice\", U0BOB = \"bob\" }}\n"
    );
    if teams {
        config.push_str("\n[approvals.teams]\nworkflow_url_env = \"TEST_TEAMS_URL\"\n");
    }
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup
}

pub(crate) async fn start(setup: &Setup, fake_url: &str) -> HttpGateway {
    let teams = format!("{fake_url}/teams");
    setup
        .http_with_env(&[
            ("TEST_SLACK_BOT_TOKEN", BOT_TOKEN),
            ("TEST_SLACK_SIGNING_SECRET", SIGNING_SECRET),
            ("TEST_TEAMS_URL", teams.as_str()),
        ])
        .await
}

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// Slack's v0 signature, computed here independently of Airlock's code.
fn sign(timestamp: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SIGNING_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(tag.as_ref()))
}

/// The form body Slack posts: `payload=<json>`.
fn form(payload: &Value) -> String {
    url::form_urlencoded::Serializer::new(String::new()).append_pair("payload", &payload.to_string()).finish()
}

pub(crate) fn click(user: &str, action: &str, id: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase()},
        "trigger_id": format!("trigger-{user}"),
        "channel": {"id": "C0APPROVALS"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0APPROVALS"},
        "actions": [{"type": "button", "action_id": action, "block_id": "airlock_decision", "value": id}],
    })
}

/// POSTs `body` to `/slack/interactions` with the given timestamp and signature.
async fn post_raw(gateway: &HttpGateway, timestamp: &str, signature: &str, body: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{}/slack/interactions", gateway.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("post interaction")
        .status()
}

/// Signs and posts a payload as Slack would.
pub(crate) async fn interact(gateway: &HttpGateway, payload: &Value) -> StatusCode {
    let body = form(payload);
    let ts = now().to_string();
    post_raw(gateway, &ts, &sign(&ts, &body), &body).await
}

/// The approval id the Approve and Deny buttons carry.
pub(crate) fn approval_id(message: &Value) -> String {
    let blocks = message["blocks"].as_array().expect("blocks");
    let actions = blocks.iter().find(|b| b["type"] == "actions").expect("an actions block");
    let values: Vec<&str> = actions["elements"].as_array().expect("elements").iter().map(|e| e["value"].as_str().expect("value")).collect();
    assert_eq!(values.len(), 2, "Approve and Deny");
    assert_eq!(values[0], values[1]);
    assert!(values[0].starts_with("ap-"), "{values:?}");
    values[0].to_owned()
}

/// Starts `demo__delete_bucket` (high risk → approve) over HTTP, without waiting for it.
async fn held_call(
    gateway: &HttpGateway,
) -> (rmcp::service::RunningService<rmcp::RoleClient, TestClient>, tokio::task::JoinHandle<Result<rmcp::model::CallToolResult, rmcp::ServiceError>>) {
    let client = gateway.client(TestClient::new()).await;
    let peer = client.peer().clone();
    let pending = tokio::spawn(async move { peer.call_tool(call("demo__delete_bucket", json!({"bucket": "tmp-scratch"}))).await });
    (client, pending)
}

/// Stops the gateway and reads its log (sled locks the database while it runs).
pub(crate) async fn stop_and_export(mut gateway: HttpGateway, data_dir: &Path) -> Vec<Value> {
    let _ = gateway.child.kill().await;
    let _ = gateway.child.wait().await;
    for _ in 0..100 {
        let out = Command::new(airlock()).args(["log", "export", "--format", "jsonl", "--data-dir"]).arg(data_dir).output().expect("run airlock log");
        if String::from_utf8_lossy(&out.stderr).contains("locked") {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
        return String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect();
    }
    panic!("the audit database stayed locked");
}

pub(crate) fn kinds(records: &[Value], kind: &str) -> Vec<Value> {
    records.iter().filter(|r| r["kind"] == kind).cloned().collect()
}

#[tokio::test]
async fn a_slack_approval_releases_the_held_call_and_both_channels_show_the_outcome() {
    let (fake, fake_url) = Fake::start().await;
    let setup = setup(&fake_url, true);
    let gateway = start(&setup, &fake_url).await;
    let (client, pending) = held_call(&gateway).await;

    let posted = fake.nth("chat.postMessage", 1).await;
    assert_eq!(posted.authorization.as_deref(), Some(format!("Bearer {BOT_TOKEN}").as_str()));
    assert_eq!(posted.body["channel"], "C0APPROVALS");
    let id = approval_id(&posted.body);
    let text = posted.body["blocks"].to_string();
    for fact in ["demo__delete_bucket", "`demo`", "high", "`anonymous`", "tmp-scratch", "Argument digest (HMAC-SHA256)", "Expires"] {
        assert!(text.contains(fact), "the message lacks {fact}: {text}");
    }

    let card = fake.nth("teams", 1).await.body;
    let content = &card["attachments"][0]["content"];
    assert_eq!(content["version"], "1.5");
    assert_eq!(content["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(content["actions"][0]["url"], format!("{}/approvals/{id}", gateway.url));

    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir(), "the held call ran before approval");
    assert_eq!(interact(&gateway, &click("U0ALICE", "airlock_approve", &id)).await, StatusCode::OK);

    let updated = fake.nth("chat.update", 1).await.body;
    assert_eq!(updated["ts"], "1700000000.000100");
    assert_eq!(updated["channel"], "C0APPROVALS");
    let shown = updated["blocks"].to_string();
    assert!(shown.contains("*Approved* by alice (via slack)"), "{shown}");
    assert!(!shown.contains("\"actions\""), "the buttons stay after settling: {shown}");

    let result = pending.await.expect("join").expect("call");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert!(!setup.sandbox("demo").join("buckets/tmp-scratch").exists(), "the approved call did not run");

    let settled = fake.nth("teams", 2).await.body.to_string();
    assert!(settled.contains("Approved: demo__delete_bucket") && settled.contains("alice (via slack)"), "{settled}");
    client.cancel().await.expect("close");

    let records = stop_and_export(gateway, &setup.data_dir()).await;
    let decided = kinds(&records, "approval_decided");
    assert_eq!(decided.len(), 1, "{decided:#?}");
    assert_eq!(decided[0]["approver"], "alice");
    assert_eq!(decided[0]["channel"], "slack");
}

#[tokio::test]
async fn a_slack_deny_asks_for_a_reason_in_a_modal_and_records_it() {
    let (fake, fake_url) = Fake::start().await;
    let setup = setup(&fake_url, false);
    let gateway = start(&setup, &fake_url).await;
    let (client, pending) = held_call(&gateway).await;
    let id = approval_id(&fake.nth("chat.postMessage", 1).await.body);

    assert_eq!(interact(&gateway, &click("U0BOB", "airlock_deny", &id)).await, StatusCode::OK);
    let opened = fake.nth("views.open", 1).await.body;
    assert_eq!(opened["trigger_id"], "trigger-U0BOB");
    let view = &opened["view"];
    assert_eq!(view["private_metadata"], id.as_str());
    assert!(fake.all("chat.update").is_empty(), "a deny click alone decided");

    let submission = json!({
        "type": "view_submission",
        "user": {"id": "U0BOB"},
        "view": {
            "id": "V1",
            "callback_id": view["callback_id"],
            "private_metadata": id,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": "not on a Friday"}}}},
        },
    });
    assert_eq!(interact(&gateway, &submission).await, StatusCode::OK);

    let shown = fake.nth("chat.update", 1).await.body["blocks"].to_string();
    assert!(shown.contains("*Denied* by bob (via slack): not on a Friday"), "{shown}");
    let result = pending.await.expect("join").expect("call");
    assert_eq!(result.is_error, Some(true), "{}", text_of(&result));
    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir(), "a denied call ran");
    client.cancel().await.expect("close");

    let records = stop_and_export(gateway, &setup.data_dir()).await;
    let decided = kinds(&records, "approval_decided");
    assert_eq!(decided.len(), 1, "{decided:#?}");
    assert_eq!(decided[0]["decision"], "deny");
    assert_eq!(decided[0]["comment"], "not on a Friday");
}

#[tokio::test]
async fn an_unmapped_slack_user_is_told_and_nothing_is_decided() {
    let (fake, fake_url) = Fake::start().await;
    let setup = setup(&fake_url, false);
    let gateway = start(&setup, &fake_url).await;
    let (client, _pending) = held_call(&gateway).await;
    let id = approval_id(&fake.nth("chat.postMessage", 1).await.body);

    assert_eq!(interact(&gateway, &click("U0MALLORY", "airlock_approve", &id)).await, StatusCode::OK);
    let told = fake.nth("chat.postEphemeral", 1).await.body;
    assert_eq!(told["user"], "U0MALLORY");
    assert!(told["text"].as_str().unwrap_or_default().contains("not mapped"), "{told}");
    // A deny from the same user opens no modal either.
    assert_eq!(interact(&gateway, &click("U0MALLORY", "airlock_deny", &id)).await, StatusCode::OK);
    fake.nth("chat.postEphemeral", 2).await;
    assert!(fake.all("views.open").is_empty());
    assert!(fake.all("chat.update").is_empty());
    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir());
    drop(client);

    let records = stop_and_export(gateway, &setup.data_dir()).await;
    assert_eq!(kinds(&records, "approval_requested").len(), 1);
    assert!(kinds(&records, "approval_decided").is_empty());
}

#[tokio::test]
async fn a_bad_signature_a_stale_timestamp_and_a_replay_get_401_and_decide_nothing() {
    let (fake, fake_url) = Fake::start().await;
    let setup = setup(&fake_url, false);
    let gateway = start(&setup, &fake_url).await;
    let (client, _pending) = held_call(&gateway).await;
    let id = approval_id(&fake.nth("chat.postMessage", 1).await.body);

    let approve = form(&click("U0ALICE", "airlock_approve", &id));
    let ts = now().to_string();
    // Signed for one body, sent with another.
    let harmless = form(&click("U0ALICE", "something_else", &id));
    assert_eq!(post_raw(&gateway, &ts, &sign(&ts, &harmless), &approve).await, StatusCode::UNAUTHORIZED);
    // Correctly signed, but ten minutes old.
    let stale = (now() - 600).to_string();
    assert_eq!(post_raw(&gateway, &stale, &sign(&stale, &approve), &approve).await, StatusCode::UNAUTHORIZED);
    // No signature at all.
    assert_eq!(post_raw(&gateway, &ts, "", &approve).await, StatusCode::UNAUTHORIZED);
    // Accepted once (an unmapped user: nothing is decided), refused when replayed.
    let unmapped = form(&click("U0MALLORY", "airlock_approve", &id));
    let signature = sign(&ts, &unmapped);
    assert_eq!(post_raw(&gateway, &ts, &signature, &unmapped).await, StatusCode::OK);
    assert_eq!(post_raw(&gateway, &ts, &signature, &unmapped).await, StatusCode::UNAUTHORIZED);
    fake.nth("chat.postEphemeral", 1).await;
    assert_eq!(fake.all("chat.postEphemeral").len(), 1, "the replay was acted on");
    drop(client);

    let records = stop_and_export(gateway, &setup.data_dir()).await;
    assert_eq!(kinds(&records, "approval_requested").len(), 1);
    assert!(kinds(&records, "approval_decided").is_empty(), "{records:#?}");
}

#[tokio::test]
async fn a_rate_limited_post_is_retried_until_slack_takes_it() {
    let (fake, fake_url) = Fake::start().await;
    fake.throttle.store(2, Ordering::SeqCst);
    let setup = setup(&fake_url, false);
    let gateway = start(&setup, &fake_url).await;
    let (client, _pending) = held_call(&gateway).await;
    let third = fake.nth("chat.postMessage", 3).await;
    let first = fake.nth("chat.postMessage", 1).await;
    assert_eq!(third.body, first.body, "a retry sends the same message");
    assert_eq!(fake.throttle.load(Ordering::SeqCst), 0);
    approval_id(&third.body);
    drop(client);
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

#[tokio::test]
async fn slack_users_decide_with_the_groups_of_their_token_entry_and_the_message_shows_the_tally() {
    let (fake, fake_url) = Fake::start().await;
    let config = format!(
        "[gateway]\ndata_dir = \"data\"\n\n[approvals]\ntimeout = \"30m\"\n\n\
         [[identity.tokens]]\nname = \"carol\"\nsha256 = \"{carol}\"\n\n\
         [[identity.tokens]]\nname = \"alice\"\nsha256 = \"{alice}\"\ngroups = [\"sre\"]\n\n\
         [[identity.tokens]]\nname = \"bob\"\nsha256 = \"{bob}\"\ngroups = [\"sre\"]\n\n\
         [approvals.slack]\nbot_token_env = \"TEST_SLACK_BOT_TOKEN\"\nsigning_secret_env = \"TEST_SLACK_SIGNING_SECRET\"\n\
         channel = \"C0APPROVALS\"\napi_base = \"{fake_url}/api\"\n\
         users = {{ U0ALICE = \"alice\", U0BOB = \"bob\", U0DAVE = \"dave\" }}\n",
        carol = sha256_hex("carol-token"),
        alice = sha256_hex("alice-token"),
        bob = sha256_hex("bob-token"),
    );
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy(
        "sre",
        "[[rule]]\nid = \"two-sre\"\ntools = [\"demo__delete_bucket\"]\neffect = \"approve\"\n\
         approvers = [\"group:sre\"]\nquorum = 2\nreason = \"deletes need two SREs\"\n",
    );
    let gateway = start(&setup, &fake_url).await;
    let config = rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url))
        .auth_header("carol-token");
    let client = rmcp::ServiceExt::serve(TestClient::new(), rmcp::transport::StreamableHttpClientTransport::from_config(config))
        .await
        .expect("initialize as carol");
    let peer = client.peer().clone();
    let pending = tokio::spawn(async move { peer.call_tool(call("demo__delete_bucket", json!({"bucket": "tmp-scratch"}))).await });

    let posted = fake.nth("chat.postMessage", 1).await.body;
    let id = approval_id(&posted);
    assert!(posted["blocks"].to_string().contains("`carol`"), "{posted}");

    assert_eq!(interact(&gateway, &click("U0ALICE", "airlock_approve", &id)).await, StatusCode::OK);
    let tally = fake.nth("chat.update", 1).await.body;
    let shown = tally["blocks"].to_string();
    assert!(shown.contains("1 of 2 approvals so far: alice (via slack)"), "{shown}");
    assert!(shown.contains("\"actions\""), "the buttons went away before the quorum: {shown}");

    // dave is mapped but has no token entry, so no groups: not an approver.
    assert_eq!(interact(&gateway, &click("U0DAVE", "airlock_approve", &id)).await, StatusCode::OK);
    let to_dave = || fake.all("chat.postEphemeral").into_iter().find(|s| s.body["user"] == "U0DAVE");
    assert!(eventually(WAIT, || to_dave().is_some()).await, "dave was not told");
    let told = to_dave().map(|s| s.body).unwrap_or_default();
    assert!(told["text"].as_str().unwrap_or_default().contains("group:sre"), "{told}");

    assert_eq!(interact(&gateway, &click("U0BOB", "airlock_approve", &id)).await, StatusCode::OK);
    let done = fake.nth("chat.update", 2).await.body["blocks"].to_string();
    assert!(done.contains("*Approved* by alice (via slack), bob (via slack)"), "{done}");
    let result = pending.await.expect("join").expect("call");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn an_expired_hold_updates_the_slack_message_and_posts_a_teams_outcome_card() {
    let (fake, fake_url) = Fake::start().await;
    let setup = setup(&fake_url, true);
    // A one-second hold: nobody decides, so it expires (the test waits for that, it
    // does not time it).
    let config = std::fs::read_to_string(setup.config()).expect("read config").replace("timeout = \"30m\"", "timeout = \"1s\"");
    std::fs::write(setup.config(), config).expect("write config");
    let gateway = start(&setup, &fake_url).await;
    let (client, pending) = held_call(&gateway).await;
    fake.nth("chat.postMessage", 1).await;

    let result = pending.await.expect("join").expect("call");
    assert_eq!(result.is_error, Some(true), "{}", text_of(&result));
    assert!(text_of(&result).to_lowercase().contains("expired"), "{}", text_of(&result));
    let shown = fake.nth("chat.update", 1).await.body["blocks"].to_string();
    assert!(shown.contains("*Expired*") && !shown.contains("Denied"), "{shown}");
    let card = fake.nth("teams", 2).await.body.to_string();
    assert!(card.contains("Expired: demo__delete_bucket"), "{card}");
    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir(), "an expired hold ran");
    client.cancel().await.expect("close");
}

/// A gateway killed while a hold waits: the next start cancels the hold and still shows
/// that on the Slack message it posted and on Teams.
#[tokio::test]
async fn after_a_crash_the_next_start_shows_the_cancelled_hold_in_slack_and_teams() {
    let (fake, fake_url) = Fake::start().await;
    let setup = setup(&fake_url, true);
    let mut gateway = start(&setup, &fake_url).await;
    let (client, pending) = held_call(&gateway).await;
    fake.nth("chat.postMessage", 1).await;
    fake.nth("teams", 1).await;
    gateway.child.start_kill().expect("kill");
    let _ = gateway.child.wait().await;
    pending.abort();
    drop(client);

    let again = start(&setup, &fake_url).await;
    // Killed before or after Airlock noted the message's `ts`: the outcome is shown by an
    // update of that message, or by a message of its own.
    assert!(
        eventually(WAIT, || !fake.all("chat.update").is_empty() || fake.all("chat.postMessage").len() >= 2).await,
        "the outcome never reached Slack"
    );
    let shown = match fake.all("chat.update").first() {
        Some(update) => {
            assert_eq!(update.body["ts"], "1700000000.000100");
            update.body["blocks"].to_string()
        }
        None => fake.all("chat.postMessage")[1].body["blocks"].to_string(),
    };
    assert!(shown.contains("*Cancelled*") && shown.contains("gateway restarted"), "{shown}");
    assert!(!shown.contains("\"actions\""), "buttons after the restart: {shown}");
    let card = fake.nth("teams", 2).await.body.to_string();
    assert!(card.contains("Cancelled: demo__delete_bucket"), "{card}");
    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir());
    drop(again);
}
