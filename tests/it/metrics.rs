//! Metrics read with `airlock metrics` (over the control socket, so a gateway that serves
//! only stdio can be read too) whose values match what happened: holds by kind and final
//! state, chat posts that failed, requests refused by reason over HTTP, downstreams that
//! went down and were restarted.

use std::process::Output;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

use crate::telemetry::sample;
use crate::util::{ALLOW_ALL, ElicitAnswer, Setup, TestClient, airlock, call, eventually, text_of};

/// `airlock metrics --config <setup>`.
fn airlock_metrics(setup: &Setup) -> Output {
    std::process::Command::new(airlock()).args(["metrics", "--config"]).arg(setup.config()).output().expect("run airlock metrics")
}

/// The exposition of the setup's running gateway.
fn metrics(setup: &Setup) -> String {
    let out = airlock_metrics(setup);
    assert!(out.status.success(), "airlock metrics: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Polls `airlock metrics` until `ready` holds (events are counted off the call path);
/// returns the last exposition either way, for the assertions to show.
async fn metrics_when(setup: &Setup, ready: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    eventually(Duration::from_secs(30), || {
        text = metrics(setup);
        ready(&text)
    })
    .await;
    text
}

#[tokio::test]
async fn airlock_metrics_reads_a_stdio_only_gateway_over_its_socket() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    for i in 0..2 {
        client.call_tool(call("demo__echo", json!({"text": format!("call {i}")}))).await.expect("call");
    }
    let text = metrics(&setup);
    assert_eq!(sample(&text, "airlock_calls_total", &["tool=\"demo__echo\"", "decision=\"allow\""]), Some(2.0), "{text}");
    assert_eq!(sample(&text, "airlock_downstream_up", &["server=\"demo\""]), Some(1.0), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "an OpenMetrics exposition ends with # EOF: {text}");
    client.cancel().await.expect("close");
    crate::util::stop_gateway(&setup.data_dir());
    let out = airlock_metrics(&setup);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no gateway is running for") && stderr.contains("memory"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn metrics_false_turns_them_off_and_airlock_metrics_says_so() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n\n[telemetry]\nmetrics = false\n");
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let client = setup.stdio(TestClient::new()).await;
    client.call_tool(call("demo__echo", json!({"text": "uncounted"}))).await.expect("call");
    let out = airlock_metrics(&setup);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics are off in this gateway ([telemetry] metrics = false)"), "{stderr}");
    client.cancel().await.expect("close");

    // Off and a listener at once is a contradiction, named with its line.
    std::fs::write(setup.config(), "[gateway]\ndata_dir = \"data\"\n\n[telemetry]\nmetrics = false\nmetrics_listen = \"127.0.0.1:0\"\n")
        .expect("write config");
    let out = std::process::Command::new(airlock()).args(["check", "--config"]).arg(setup.config()).output().expect("check");
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(said.contains("airlock.toml:5: key \"telemetry.metrics\""), "{said}");
}

const HOLDS: &str = "[[rule]]\nid = \"grants-confirm\"\ntools = [\"demo__grant_role\"]\neffect = \"confirm\"\nreason = \"grants\"\n\n\
                     [[rule]]\nid = \"deletes-approve\"\ntools = [\"demo__delete_bucket\"]\neffect = \"approve\"\nreason = \"deletes\"\n";

#[tokio::test]
async fn hold_metrics_count_holds_by_kind_and_final_state() {
    // A one-second approval timeout: the delete is never decided, so it expires.
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n\n[approvals]\ntimeout = \"1s\"\n");
    setup.demo("demo");
    setup.policy("holds", HOLDS);
    let confirming = setup.stdio(TestClient::new()).await;
    let done = confirming.call_tool(call("demo__grant_role", json!({"user": "ana", "role": "admin"}))).await.expect("call");
    assert_ne!(done.is_error, Some(true), "{}", text_of(&done));
    let expired = confirming.call_tool(call("demo__delete_bucket", json!({"bucket": "tmp-scratch"}))).await.expect("call");
    assert!(text_of(&expired).to_lowercase().contains("expired"), "{}", text_of(&expired));
    let declining = setup.stdio(TestClient::answering(ElicitAnswer::Decline)).await;
    let denied = declining.call_tool(call("demo__grant_role", json!({"user": "bo", "role": "admin"}))).await.expect("call");
    assert_eq!(denied.is_error, Some(true));

    let settled = |text: &str, kind: &str, state: &str| {
        sample(text, "airlock_holds_settled_total", &[&format!("kind=\"{kind}\""), &format!("state=\"{state}\"")])
    };
    let text = metrics_when(&setup, |t| settled(t, "confirm", "denied").is_some()).await;
    assert_eq!(sample(&text, "airlock_holds_opened_total", &["kind=\"confirm\""]), Some(2.0), "{text}");
    assert_eq!(sample(&text, "airlock_holds_opened_total", &["kind=\"approve\""]), Some(1.0), "{text}");
    assert_eq!(settled(&text, "confirm", "approved"), Some(1.0), "{text}");
    assert_eq!(settled(&text, "confirm", "denied"), Some(1.0), "{text}");
    assert_eq!(settled(&text, "approve", "expired"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "airlock_holds_pending", &["kind=\"approve\""]), Some(0.0), "{text}");
    assert_eq!(sample(&text, "airlock_holds_pending", &["kind=\"confirm\""]), Some(0.0), "{text}");
    let decided = ["kind=\"approve\"", "state=\"expired\""];
    assert_eq!(sample(&text, "airlock_hold_decision_seconds_count", &decided), Some(1.0), "{text}");
    // Time to decision runs from the hold's opening: an expiry comes no sooner than the
    // one-second timeout.
    let waited = sample(&text, "airlock_hold_decision_seconds_sum", &decided).expect("a sum");
    assert!(waited >= 1.0, "{waited}\n{text}");
    confirming.cancel().await.expect("close");
    declining.cancel().await.expect("close");
}

/// A chat endpoint: Slack's Web API answers 500 to everything, the Teams webhook 202.
async fn half_broken_chat() -> String {
    let router = axum::Router::new()
        .route("/api/{method}", axum::routing::post(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/teams", axum::routing::post(|| async { axum::http::StatusCode::ACCEPTED }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn chat_posts_are_counted_by_channel_and_outcome_and_failures_show() {
    let chat = half_broken_chat().await;
    let setup = Setup::new(&format!(
        "[gateway]\ndata_dir = \"data\"\n\n[approvals]\ntimeout = \"1s\"\n\n[approvals.slack]\n\
         bot_token_env = \"TEST_SLACK_BOT_TOKEN\"\nsigning_secret_env = \"TEST_SLACK_SIGNING_SECRET\"\n\
         channel = \"C0APPROVALS\"\napi_base = \"{chat}/api\"\n\n[approvals.teams]\nworkflow_url_env = \"TEST_TEAMS_URL\"\n"
    ));
    setup.demo("demo");
    setup.policy("holds", HOLDS);
    let teams = format!("{chat}/teams");
    let gateway = setup
        .http_with_env(&[("TEST_SLACK_BOT_TOKEN", "xoxb-test"), ("TEST_SLACK_SIGNING_SECRET", "s3cret"), ("TEST_TEAMS_URL", &teams)])
        .await;
    let client = gateway.client(TestClient::new()).await;
    let expired = client.call_tool(call("demo__delete_bucket", json!({"bucket": "tmp-scratch"}))).await.expect("call");
    assert!(text_of(&expired).to_lowercase().contains("expired"), "{}", text_of(&expired));
    let post = |text: &str, channel: &str, outcome: &str| {
        sample(text, "airlock_chat_posts_total", &[&format!("channel=\"{channel}\""), &format!("outcome=\"{outcome}\"")])
    };
    // The request card and the outcome card went to Teams; every Slack post failed.
    let text = metrics_when(&setup, |t| post(t, "teams", "ok") == Some(2.0) && post(t, "slack", "failed").is_some()).await;
    assert_eq!(post(&text, "teams", "ok"), Some(2.0), "{text}");
    assert!(post(&text, "slack", "failed").is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(post(&text, "slack", "ok"), None, "{text}");
    assert_eq!(post(&text, "teams", "failed"), None, "{text}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn refused_http_requests_are_counted_by_reason() {
    const TOKEN: &str = "metrics-test-token";
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, TOKEN.as_bytes()));
    let setup = Setup::new(&format!("[gateway]\ndata_dir = \"data\"\n\n[[identity.tokens]]\nname = \"agent\"\nsha256 = \"{digest}\"\n"));
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let gateway = setup.http().await;
    let mcp = format!("{}/mcp", gateway.url);
    let http = reqwest::Client::new();
    let post = |body: &'static str| {
        http.post(&mcp)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .body(body)
    };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    assert_eq!(post(init).send().await.expect("POST").status(), 401, "no token");
    assert_eq!(post(init).bearer_auth("wrong-token").send().await.expect("POST").status(), 401, "a wrong token");
    let foreign = post(init).bearer_auth(TOKEN).header("Host", "evil.example").send().await.expect("POST");
    assert_eq!(foreign.status(), 403, "a foreign Host");
    let garbage = post("{this is not json").bearer_auth(TOKEN).send().await.expect("POST");
    // rmcp answers a body that is not a JSON-RPC message with 415.
    assert_eq!(garbage.status(), 415, "not JSON");
    let config = StreamableHttpClientTransportConfig::with_uri(mcp.clone()).auth_header(TOKEN.to_owned());
    let client = TestClient::new().serve(StreamableHttpClientTransport::from_config(config)).await.expect("initialize with the token");
    let invalid = client.call_tool(call("demo__echo", json!({"text": 5}))).await.expect("refusal");
    assert_eq!(invalid.is_error, Some(true));
    client.call_tool(call("demo__echo", json!({"text": "fine"}))).await.expect("an accepted call");

    let text = metrics(&setup);
    let rejected = |reason: &str| sample(&text, "airlock_rejected_requests_total", &[&format!("reason=\"{reason}\"")]);
    assert_eq!(rejected("auth"), Some(2.0), "{text}");
    assert_eq!(rejected("host_origin"), Some(1.0), "{text}");
    assert_eq!(rejected("malformed"), Some(1.0), "{text}");
    assert_eq!(rejected("schema"), Some(1.0), "{text}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn downstream_metrics_show_up_down_and_restarts() {
    let setup = Setup::with_demo();
    // A downstream that exits at once: down, and retried with backoff.
    setup.manifest("broken", "name = \"broken\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 3\"]\n");
    let client = setup.stdio(TestClient::new()).await;
    let crashed = client.call_tool(call("demo__crash", json!({}))).await.expect("a tool result");
    assert_eq!(crashed.is_error, Some(true));
    let mut back = false;
    for _ in 0..300 {
        let result = client.call_tool(call("demo__echo", json!({"text": "back"}))).await.expect("call");
        if result.is_error != Some(true) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the demo downstream was not restarted");
    let restarts = |text: &str, server: &str| sample(text, "airlock_downstream_restarts_total", &[&format!("server=\"{server}\"")]);
    let text = metrics_when(&setup, |t| restarts(t, "broken").is_some_and(|n| n >= 2.0)).await;
    assert_eq!(sample(&text, "airlock_downstream_up", &["server=\"demo\""]), Some(1.0), "{text}");
    assert_eq!(restarts(&text, "demo"), Some(1.0), "one crash, one restart: {text}");
    assert_eq!(sample(&text, "airlock_downstream_up", &["server=\"broken\""]), Some(0.0), "{text}");
    assert!(restarts(&text, "broken").is_some_and(|n| n >= 2.0), "a failing start is retried: {text}");
    client.cancel().await.expect("close");
}
