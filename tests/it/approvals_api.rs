//! The approvals HTTP API and the `approvals` / `receipts` commands, through the real
//! binary: held calls are settled by other identities over `/api/v1/approvals`, and the
//! receipt a downstream received verifies with the public key alone.

use std::process::Output;
use std::time::Duration;

use rmcp::model::CallToolResult;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::util::{HttpGateway, Setup, TestClient, airlock, call, stderr, stdout, text_of};

/// `(name, token, group)`: carol calls tools, bob and dave are SREs, mallory is not.
const PEOPLE: [(&str, &str, &str); 4] = [
    ("carol", "tok-carol-0123456789", "dev"),
    ("bob", "tok-bob-0123456789", "sre"),
    ("dave", "tok-dave-0123456789", "sre"),
    ("mallory", "tok-mallory-0123456789", "dev"),
];

pub(crate) fn token(name: &str) -> &'static str {
    PEOPLE.iter().find(|p| p.0 == name).map(|p| p.1).expect("known person")
}

/// Grants need one SRE, migrations two; expiring grants time out almost at once; echo runs.
const POLICY: &str = r#"
[[rule]]
id = "grants-need-an-sre"
tools = ["demo__grant_role"]
effect = "approve"
approvers = ["group:sre"]
quorum = 1
reason = "role grants need an SRE"

[[rule]]
id = "migrations-need-two-sres"
tools = ["demo__run_migration"]
effect = "approve"
approvers = ["group:sre"]
quorum = 2
reason = "migrations need two SREs"

[[rule]]
id = "restarts-expire"
tools = ["demo__restart_service"]
effect = "approve"
approvers = ["group:sre"]
timeout = "1s"
reason = "restarts need an SRE, quickly"

[[rule]]
id = "echo"
tools = ["demo__echo"]
effect = "allow"
reason = "harmless"
"#;

/// A demo downstream, the policy above, and the four people's tokens.
pub(crate) fn setup() -> Setup {
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n\n[approvals]\ntimeout = \"10m\"\n");
    for (name, token, group) in PEOPLE {
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
        config.push_str(&format!("\n[[identity.tokens]]\nname = \"{name}\"\nsha256 = \"{digest}\"\ngroups = [\"{group}\"]\n"));
    }
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy("approvals", POLICY);
    setup
}

/// An MCP client over streamable HTTP, authenticated as `name`.
async fn mcp_as(gateway: &HttpGateway, name: &str) -> RunningService<RoleClient, TestClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token(name));
    TestClient::new().serve(StreamableHttpClientTransport::from_config(config)).await.expect("initialize over HTTP")
}

/// One API request; returns the status and the JSON body.
pub(crate) async fn api(gateway: &HttpGateway, method: &str, path: &str, who: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", gateway.url);
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(who) = who {
        request = request.bearer_auth(token(who));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("reach the gateway");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub(crate) async fn decide(gateway: &HttpGateway, id: &str, who: &str, decision: &str, comment: Option<&str>) -> (u16, Value) {
    let body = json!({"decision": decision, "comment": comment});
    api(gateway, "POST", &format!("/api/v1/approvals/{id}/decision"), Some(who), Some(body)).await
}

/// Waits until the API lists a pending approval for `tool`, and returns it.
pub(crate) async fn pending(gateway: &HttpGateway, tool: &str) -> Value {
    approval_for(gateway, tool, "/api/v1/approvals?state=pending").await
}

/// Waits until `path` lists an approval for `tool`, and returns it. The limit is a hang
/// guard, not a timing assertion.
async fn approval_for(gateway: &HttpGateway, tool: &str, path: &str) -> Value {
    approval_seen_by(gateway, tool, path, "bob").await
}

/// As `approval_for`, listing as `who` (a hold is visible to its caller and its deciders).
async fn approval_seen_by(gateway: &HttpGateway, tool: &str, path: &str, who: &str) -> Value {
    for _ in 0..600 {
        let (status, body) = api(gateway, "GET", path, Some(who), None).await;
        assert_eq!(status, 200, "{body}");
        if let Some(found) = body["approvals"].as_array().and_then(|all| all.iter().find(|a| a["tool"] == tool)) {
            return found.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no approval for {tool} appeared at {path}");
}

/// Starts a call as carol on its own task (it is held until someone decides).
fn call_in_background(
    client: &RunningService<RoleClient, TestClient>,
    tool: &str,
    args: Value,
) -> tokio::task::JoinHandle<CallToolResult> {
    let peer = client.peer().clone();
    let params = call(tool, args);
    tokio::spawn(async move { peer.call_tool(params).await.expect("the held call answers") })
}

/// `airlock <args>` with `AIRLOCK_TOKEN` set to `who`'s token.
async fn cli(who: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(airlock())
        .args(args)
        .env("AIRLOCK_TOKEN", token(who))
        .env_remove("AIRLOCK_LOG")
        .output()
        .await
        .expect("run airlock")
}

#[tokio::test]
async fn without_identity_every_api_route_answers_401_and_says_why() {
    let setup = Setup::enforcing();
    let gateway = setup.http().await;
    for (method, path) in [
        ("GET", "/api/v1/approvals"),
        ("GET", "/api/v1/approvals/ap-000000000000000000000000"),
        ("POST", "/api/v1/approvals/ap-000000000000000000000000/decision"),
    ] {
        let (status, body) = api(&gateway, method, path, None, Some(json!({"decision": "approve"}))).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(body["error"].as_str().unwrap_or("").contains("no identity is configured"), "{body}");
    }
}

#[tokio::test]
async fn api_needs_a_known_token_and_answers_404_for_unknown_ids() {
    let setup = setup();
    let gateway = setup.http().await;
    let (status, _) = api(&gateway, "GET", "/api/v1/approvals", None, None).await;
    assert_eq!(status, 401);
    let (status, body) = api(&gateway, "GET", "/api/v1/approvals", Some("bob"), None).await;
    assert_eq!((status, body), (200, json!({"approvals": []})));
    let (status, body) = api(&gateway, "GET", "/api/v1/approvals?state=later", Some("bob"), None).await;
    assert_eq!(status, 400, "{body}");
    for id in ["ap-000000000000000000000000", "nope"] {
        let (status, _) = api(&gateway, "GET", &format!("/api/v1/approvals/{id}"), Some("bob"), None).await;
        assert_eq!(status, 404, "{id}");
        let (status, _) = decide(&gateway, id, "bob", "approve", None).await;
        assert_eq!(status, 404, "{id}");
    }
    let url = gateway.url.as_str();
    let out = cli("bob", &["approvals", "list", "--url", url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "no approvals");
    let out = cli("bob", &["approvals", "show", "ap-000000000000000000000000", "--url", url]).await;
    assert_eq!(out.status.code(), Some(2), "an unknown id is an error: {}", stderr(&out));
    let out = cli("bob", &["approvals", "approve", "../etc", "--url", url]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not an approval id"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_second_identity_approves_over_the_api_and_the_held_call_runs_with_a_receipt() {
    let setup = setup();
    let gateway = setup.http().await;
    let carol = mcp_as(&gateway, "carol").await;
    let args = json!({"user": "erin", "role": "admin"});
    let held = call_in_background(&carol, "demo__grant_role", args.clone());
    let approval = pending(&gateway, "demo__grant_role").await;
    let id = approval["id"].as_str().expect("id").to_owned();
    assert_eq!(approval["caller"], "carol");
    assert_eq!(approval["args"], args);

    let (status, body) = api(&gateway, "GET", &format!("/api/v1/approvals/{id}"), Some("dave"), None).await;
    assert_eq!((status, &body["state"]), (200, &json!("pending")));
    let out = cli("bob", &["approvals", "show", &id, "--url", &gateway.url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for expected in [id.as_str(), "demo__grant_role", "carol", "erin", "expires", approval["args_hmac"].as_str().expect("digest")] {
        assert!(stdout(&out).contains(expected), "show lacks {expected}: {}", stdout(&out));
    }

    // The caller cannot approve their own call, by API or CLI; nothing changes.
    let (status, body) = decide(&gateway, &id, "carol", "approve", None).await;
    assert_eq!(status, 403, "{body}");
    let out = cli("carol", &["approvals", "approve", &id, "--url", &gateway.url]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (_, now) = api(&gateway, "GET", &format!("/api/v1/approvals/{id}"), Some("bob"), None).await;
    assert_eq!(now["state"], "pending");
    assert_eq!(now["votes"], json!([]));
    assert!(!held.is_finished(), "the call must still be held");

    let out = cli("bob", &["approvals", "approve", &id, "--comment", "ticket OPS-7", "--url", &gateway.url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("approved"), "{}", stdout(&out));
    let result = held.await.expect("join");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));

    // Deciding again after it settled: the same person gets the state, another a conflict.
    let out = cli("dave", &["approvals", "approve", &id, "--url", &gateway.url]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let list = cli("bob", &["approvals", "list", "--state", "approved", "--url", &gateway.url]).await;
    assert!(list.status.success() && stdout(&list).contains(&id), "{}", stdout(&list));

    // The downstream got a signed receipt; it verifies with the data dir's key and the
    // public key from `keys show`, and fails once altered or against other arguments.
    let receipts = std::fs::read_to_string(setup.sandbox("demo").join("receipts.jsonl")).expect("receipts.jsonl");
    let line = receipts.lines().next().expect("one receipt");
    let file = setup.path().join("receipt.json");
    std::fs::write(&file, line).expect("write receipt");
    let config = setup.config();
    let config = config.to_str().expect("utf-8 path");
    let file_arg = file.to_str().expect("utf-8 path");
    let out = cli("bob", &["receipts", "verify", file_arg, "--config", config, "--args", &args.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("bob") && stdout(&out).contains(&id), "{}", stdout(&out));
    let keys = cli("bob", &["keys", "show", "--config", config]).await;
    let pubkey = setup.path().join("pubkey.txt");
    std::fs::write(&pubkey, &keys.stdout).expect("write key");
    let out = cli("bob", &["receipts", "verify", file_arg, "--pubkey", pubkey.to_str().expect("utf-8")]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let other_args = json!({"user": "erin", "role": "owner"}).to_string();
    let out = cli("bob", &["receipts", "verify", file_arg, "--config", config, "--args", &other_args]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let mut altered: Value = serde_json::from_str(line).expect("json");
    altered["receipt"]["approvers"] = json!(["mallory"]);
    std::fs::write(&file, altered.to_string()).expect("write");
    let out = cli("bob", &["receipts", "verify", file_arg, "--config", config]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("INVALID"), "{}", stdout(&out));
}

#[tokio::test]
async fn the_same_approver_twice_does_not_reach_a_quorum_of_two_and_a_deny_is_final() {
    let setup = setup();
    let gateway = setup.http().await;
    let carol = mcp_as(&gateway, "carol").await;
    let held = call_in_background(&carol, "demo__run_migration", json!({"steps": 3}));
    let id = pending(&gateway, "demo__run_migration").await["id"].as_str().expect("id").to_owned();

    let (status, body) = decide(&gateway, &id, "bob", "approve", None).await;
    assert_eq!((status, &body["counted"]), (200, &json!(true)), "{body}");
    let (status, body) = decide(&gateway, &id, "bob", "approve", None).await;
    assert_eq!((status, &body["counted"]), (200, &json!(false)), "{body}");
    assert_eq!(body["approval"]["state"], "pending");
    let out = cli("bob", &["approvals", "approve", &id, "--url", &gateway.url]).await;
    assert_eq!(out.status.code(), Some(0), "a repeated click is not a refusal: {}", stderr(&out));
    assert!(stdout(&out).contains("already decided"), "{}", stdout(&out));
    assert!(!held.is_finished(), "one approver twice is not a quorum of two");

    let out = cli("dave", &["approvals", "deny", &id, "--comment", "not during the freeze", "--url", &gateway.url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let result = held.await.expect("join");
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains("dave") && text.contains("not during the freeze"), "{text}");
    assert!(!setup.sandbox("demo").join("migrations.log").exists(), "a denied migration ran");
    let (status, body) = decide(&gateway, &id, "bob", "approve", None).await;
    assert_eq!(status, 200, "bob already decided: the current state comes back: {body}");
    assert_eq!(body["approval"]["state"], "denied");
}

#[tokio::test]
async fn approving_after_expiry_is_a_conflict_and_the_call_says_expired() {
    let setup = setup();
    let gateway = setup.http().await;
    let carol = mcp_as(&gateway, "carol").await;
    let held = call_in_background(&carol, "demo__restart_service", json!({"service": "billing"}));
    // Any state: with a one-second timeout it may have expired before we look.
    let id = approval_for(&gateway, "demo__restart_service", "/api/v1/approvals").await["id"].as_str().expect("id").to_owned();
    let result = held.await.expect("join");
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).contains("expired"), "{}", text_of(&result));
    let (status, body) = decide(&gateway, &id, "bob", "approve", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["approval"]["state"], "expired");
    let out = cli("bob", &["approvals", "approve", &id, "--url", &gateway.url]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    assert!(!setup.sandbox("demo").join("restarts.log").exists(), "an expired restart ran");
}

/// An approval covers one execution of its exact arguments: other arguments, or the same
/// ones again, need a new approval.
#[tokio::test]
async fn an_approval_covers_one_execution_of_its_exact_arguments() {
    let setup = setup();
    let gateway = setup.http().await;
    let carol = mcp_as(&gateway, "carol").await;
    let first = call_in_background(&carol, "demo__grant_role", json!({"user": "ann", "role": "viewer"}));
    let held = pending(&gateway, "demo__grant_role").await;
    let (status, _) = decide(&gateway, held["id"].as_str().expect("id"), "bob", "approve", None).await;
    assert_eq!(status, 200);
    let ran = first.await.expect("join");
    assert_ne!(ran.is_error, Some(true), "{}", text_of(&ran));

    // Changed arguments: held again under a new approval; the old one does not cover it.
    let changed = call_in_background(&carol, "demo__grant_role", json!({"user": "ann", "role": "editor"}));
    let again = pending(&gateway, "demo__grant_role").await;
    assert_ne!(again["id"], held["id"]);
    assert_ne!(again["args_hmac"], held["args_hmac"]);
    let (status, _) = decide(&gateway, again["id"].as_str().expect("id"), "bob", "deny", Some("viewer is enough")).await;
    assert_eq!(status, 200);
    let refused = changed.await.expect("join");
    assert!(text_of(&refused).contains("viewer is enough"), "{}", text_of(&refused));

    // The same arguments a second time: the first approval was used up.
    let repeat = call_in_background(&carol, "demo__grant_role", json!({"user": "ann", "role": "viewer"}));
    let third = pending(&gateway, "demo__grant_role").await;
    assert_ne!(third["id"], held["id"]);
    assert_eq!(third["args_hmac"], held["args_hmac"]);
    let (status, _) = decide(&gateway, third["id"].as_str().expect("id"), "dave", "deny", Some("already granted")).await;
    assert_eq!(status, 200);
    assert!(text_of(&repeat.await.expect("join")).contains("already granted"));
    let roles = std::fs::read_to_string(setup.sandbox("demo").join("roles.json")).unwrap_or_default();
    assert!(!roles.contains("editor"), "{roles}");
}

/// A caller whose client cannot be asked is confirmed out of band over the API by its
/// human (a `human = true` token linked to the same person), never with the calling token
/// itself; then the same call runs once.
#[tokio::test]
async fn a_confirmation_given_out_of_band_lets_the_same_call_run_once() {
    const CAROLS_PHONE: &str = "tok-carol-phone-0123456789";
    let setup = Setup::new(&{
        let mut config = String::from("[gateway]\ndata_dir = \"data\"\n");
        for (name, token, group) in PEOPLE {
            let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
            let person = if name == "carol" { "person = \"carol\"\n" } else { "" };
            config.push_str(&format!(
                "\n[[identity.tokens]]\nname = \"{name}\"\nsha256 = \"{digest}\"\ngroups = [\"{group}\"]\n{person}"
            ));
        }
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, CAROLS_PHONE.as_bytes()));
        config.push_str(&format!(
            "\n[[identity.tokens]]\nname = \"carol-phone\"\nsha256 = \"{digest}\"\nhuman = true\nperson = \"carol\"\n"
        ));
        config
    });
    setup.demo("demo");
    setup.policy("confirm", "[[rule]]\nid = \"grants-confirm\"\ntools = [\"demo__grant_role\"]\neffect = \"confirm\"\n");
    let gateway = setup.http().await;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token("carol"));
    let carol = TestClient::answering(crate::util::ElicitAnswer::Unsupported)
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("initialize");
    let args = json!({"user": "kim", "role": "viewer"});
    let told = carol.call_tool(call("demo__grant_role", args.clone())).await.expect("call");
    assert!(text_of(&told).contains("human = true"), "{}", text_of(&told));
    let held = approval_seen_by(&gateway, "demo__grant_role", "/api/v1/approvals?state=pending", "carol").await;
    // Only the caller and the deciders see a hold; bob may not decide a confirmation.
    let (status, _) = api(&gateway, "GET", &format!("/api/v1/approvals/{}", held["id"].as_str().expect("id")), Some("bob"), None).await;
    assert_eq!(status, 404);
    let id = held["id"].as_str().expect("id");
    // Only the caller confirms a `confirm` hold.
    // bob may not see it either, so deciding reads as not found (as reading does).
    assert_eq!(decide(&gateway, id, "bob", "approve", None).await.0, 404);
    // The calling token itself is the agent's: refused.
    let (status, body) = decide(&gateway, id, "carol", "approve", None).await;
    assert_eq!(status, 403, "{body}");
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/approvals/{id}/decision", gateway.url))
        .bearer_auth(CAROLS_PHONE)
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .expect("decide");
    assert_eq!(response.status(), 200);
    let ran = carol.call_tool(call("demo__grant_role", args.clone())).await.expect("call");
    assert_ne!(ran.is_error, Some(true), "{}", text_of(&ran));
    let again = carol.call_tool(call("demo__grant_role", args)).await.expect("call");
    assert_eq!(again.is_error, Some(true), "one confirmation, one execution: {}", text_of(&again));
}

/// A downstream that asks for input while running an approved call (2026-07-28 on both
/// sides): the client's retry continues the same execution; nobody is asked to approve
/// again, and a replay of that retry's state is refused.
#[tokio::test]
async fn a_downstream_question_in_an_approved_call_does_not_need_a_second_approval() {
    use rmcp::model::ProtocolVersion;
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    let setup = setup();
    setup.manifest(
        "demo",
        &format!(
            "name = \"demo\"\ncommand = {:?}\nargs = [\"demo-tools\", \"--sandbox\", {:?}]\nprotocol = \"auto\"\n",
            airlock(),
            setup.sandbox("demo").display().to_string()
        ),
    );
    setup.policy("rotations", "[[rule]]\nid = \"rotations-need-an-sre\"\ntools = [\"demo__rotate_credentials\"]\neffect = \"approve\"\napprovers = [\"group:sre\"]\n");
    let gateway = setup.http().await;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token("carol"));
    let test_client = TestClient::new();
    let transport = crate::util::Recorder::new(StreamableHttpClientTransport::from_config(config), test_client.wire.clone());
    let lifecycle = ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
    let carol = test_client.clone().serve_with_lifecycle(transport, lifecycle).await.expect("discover");
    // The service's call_tool answers input_required rounds (the peer's does not).
    let (done, ()) = tokio::join!(carol.call_tool(call("demo__rotate_credentials", json!({"service": "billing-api"}))), async {
        let held = pending(&gateway, "demo__rotate_credentials").await;
        assert_eq!(decide(&gateway, held["id"].as_str().expect("id"), "bob", "approve", None).await.0, 200);
    });
    let done = done.expect("call");
    assert_ne!(done.is_error, Some(true), "{}", text_of(&done));
    let log = std::fs::read_to_string(setup.sandbox("demo").join("credentials.log")).unwrap_or_default();
    assert_eq!(log.lines().count(), 1, "rotated once: {log}");
    let wire = test_client.received();
    let asked = wire.iter().find(|m| m["result"]["resultType"] == "input_required").expect("the downstream's question");
    let state = asked["result"]["requestState"].as_str().expect("state");
    assert!(state.starts_with("airlock.v1."), "the downstream's state is sealed inside ours: {state}");
    let (_, all) = api(&gateway, "GET", "/api/v1/approvals", Some("bob"), None).await;
    assert_eq!(all["approvals"].as_array().map(Vec::len), Some(1), "one approval for the whole execution: {all}");

    // The same continuation state again is a replay.
    let mut replay = call("demo__rotate_credentials", json!({"service": "billing-api"}));
    replay.request_state = Some(state.to_owned());
    let refused = carol.call_tool(replay).await.expect("call");
    assert!(text_of(&refused).contains("already used"), "{}", text_of(&refused));
    let log = std::fs::read_to_string(setup.sandbox("demo").join("credentials.log")).unwrap_or_default();
    assert_eq!(log.lines().count(), 1);
}

/// A client that cancels its held call cancels the approval (no retry waits on it).
#[tokio::test]
async fn cancelling_a_held_call_cancels_its_approval() {
    use rmcp::model::{CallToolRequest, ClientRequest};
    use rmcp::service::PeerRequestOptions;
    let setup = setup();
    let gateway = setup.http().await;
    let carol = mcp_as(&gateway, "carol").await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(call("demo__grant_role", json!({"user": "lee", "role": "viewer"}))));
    let handle = carol.send_cancellable_request(request, PeerRequestOptions::no_options()).await.expect("send");
    let held = pending(&gateway, "demo__grant_role").await;
    handle.cancel(Some("the user gave up".to_owned())).await.expect("cancel");
    let path = format!("/api/v1/approvals/{}", held["id"].as_str().expect("id"));
    let mut settled = Value::Null;
    for _ in 0..600 {
        let (_, now) = api(&gateway, "GET", &path, Some("bob"), None).await;
        if now["state"] != "pending" {
            settled = now;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settled["state"], "cancelled", "{settled}");
    assert_eq!(settled["settled_reason"], "cancelled by the client");
    assert_eq!(decide(&gateway, held["id"].as_str().expect("id"), "bob", "approve", None).await.0, 409);
    let roles = std::fs::read_to_string(setup.sandbox("demo").join("roles.json")).unwrap_or_default();
    assert!(!roles.contains("lee"), "{roles}");
}
