//! Approval holds through the real binary: a held call runs only with the decision the
//! policy demands, and every other way out says plainly why it did not run.

use std::time::Duration;

use rmcp::model::{CallToolRequest, ClientRequest, ProtocolVersion, ServerResult};
use rmcp::service::ClientServiceExt;
use rmcp::service::PeerRequestOptions;
use serde_json::{Value, json};

use crate::util::{ElicitAnswer, Setup, TestClient, call, eventually, export, text_of};

/// Grants need the caller's own confirmation; deletes need one independent approver.
const HOLDS: &str = r#"
[[rule]]
id = "grants-confirm"
tools = ["demo__grant_role"]
effect = "confirm"
reason = "grants change who can do what"

[[rule]]
id = "deletes-approve"
tools = ["demo__delete_bucket"]
effect = "approve"
reason = "deletes are forever"
"#;

fn setup(approvals: &str) -> Setup {
    let setup = Setup::new(&format!("[gateway]\ndata_dir = \"data\"\n[approvals]\n{approvals}\n"));
    setup.demo("demo");
    setup.policy("holds", HOLDS);
    setup
}

fn roles(setup: &Setup) -> String {
    std::fs::read_to_string(setup.sandbox("demo").join("roles.json")).unwrap_or_default()
}

fn receipts(setup: &Setup) -> Vec<Value> {
    std::fs::read_to_string(setup.sandbox("demo").join("receipts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("receipt line"))
        .collect()
}

/// True once the client has seen the hold's first progress notification (sent when the
/// approval is open).
async fn held(client: &TestClient) -> bool {
    eventually(Duration::from_secs(60), || {
        client.received().iter().any(|m| m["method"] == "notifications/progress" && m["params"]["message"].as_str().is_some_and(|t| t.contains("Waiting for approval")))
    })
    .await
}

fn records_of<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

#[tokio::test]
async fn a_confirm_call_runs_only_when_the_caller_confirms_in_their_client() {
    let setup = setup("");
    let declining = setup.stdio(TestClient::answering(ElicitAnswer::Decline)).await;
    let result = declining.call_tool(call("demo__grant_role", json!({"user": "ana", "role": "admin"}))).await.expect("call");
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).contains("Not confirmed"), "{}", text_of(&result));
    assert!(!roles(&setup).contains("ana"), "a declined call ran");
    declining.cancel().await.expect("close");

    let test_client = TestClient::new();
    let confirming = setup.stdio(test_client.clone()).await;
    let result = confirming.call_tool(call("demo__grant_role", json!({"user": "ana", "role": "admin"}))).await.expect("call");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert!(roles(&setup).contains("ana"), "the confirmed call did not run");
    let asked = test_client.elicitations.lock().expect("lock").clone();
    let message = serde_json::to_value(&asked[0]).expect("json")["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("demo__grant_role") && message.contains("Argument digest"), "{message}");
    confirming.cancel().await.expect("close");

    // The downstream received a signed receipt for exactly this call.
    let receipts = receipts(&setup);
    assert_eq!(receipts.len(), 1, "one approved execution, one receipt: {receipts:?}");
    assert_eq!(receipts[0]["receipt"]["kind"], "confirm");
    assert_eq!(receipts[0]["receipt"]["tool"], "demo__grant_role");
    assert!(receipts[0]["signature"].is_string());

    let records = export(&setup.data_dir());
    let settled: Vec<&str> = records_of(&records, "approval_settled").iter().filter_map(|r| r["decision"].as_str()).collect();
    assert_eq!(settled, vec!["denied", "approved"]);
    let forwarded = records_of(&records, "call_forwarded");
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0]["approval_id"], receipts[0]["receipt"]["approval_id"]);
}

#[tokio::test]
async fn a_client_without_elicitation_is_told_how_to_confirm_out_of_band() {
    let setup = setup("");
    let client = setup.stdio(TestClient::answering(ElicitAnswer::Unsupported)).await;
    let result = client.call_tool(call("demo__grant_role", json!({"user": "bo", "role": "viewer"}))).await.expect("call");
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    // It names the approval and who can confirm it, and does not tell the agent to do it.
    assert!(text.contains("approval ap-") && text.contains("grants-confirm") && text.contains("human = true"), "{text}");
    assert!(!text.contains("airlock approvals approve"), "{text}");
    // A retry of the same call re-attaches to the same pending approval.
    let again = client.call_tool(call("demo__grant_role", json!({"user": "bo", "role": "viewer"}))).await.expect("call");
    let id = |t: &str| t.split_whitespace().find(|w| w.starts_with("ap-")).map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-').to_owned());
    assert_eq!(id(&text), id(&text_of(&again)));
    assert!(!roles(&setup).contains("bo"));
    client.cancel().await.expect("close");
    let records = export(&setup.data_dir());
    assert_eq!(records_of(&records, "approval_requested").len(), 1, "the retry did not open a second approval");
}

#[tokio::test]
async fn a_2026_client_confirms_through_input_required() {
    let setup = setup("");
    let gateway = setup.http().await;
    let test_client = TestClient::new();
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("{}/mcp", gateway.url));
    let transport = crate::util::Recorder::new(transport, test_client.wire.clone());
    let lifecycle = rmcp::service::ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
    let client = test_client.clone().serve_with_lifecycle(transport, lifecycle).await.expect("discover");
    let result = client.call_tool(call("demo__grant_role", json!({"user": "cy", "role": "viewer"}))).await.expect("call");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert!(roles(&setup).contains("cy"));
    let wire = test_client.received();
    let asked = wire.iter().find(|m| m["result"]["resultType"] == "input_required").expect("an InputRequiredResult");
    assert!(asked["result"]["requestState"].as_str().is_some_and(|s| s.starts_with("airlock.v1.")), "{asked}");
    assert!(asked["result"]["inputRequests"]["airlock_confirm"].is_object(), "{asked}");
    assert_eq!(receipts(&setup).len(), 1);
}

#[tokio::test]
async fn a_held_call_sends_progress_while_it_waits_and_expiry_is_not_denial() {
    let setup = setup("timeout = \"2s\"\nprogress_every = \"200ms\"");
    let test_client = TestClient::new();
    let client = setup.stdio(test_client.clone()).await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(call("demo__delete_bucket", json!({"bucket": "tmp-scratch"}))));
    let handle = client.send_request_with_option(request, PeerRequestOptions::no_options()).await.expect("send");
    let token = serde_json::to_value(&handle.progress_token.0).expect("token");
    let ServerResult::CallToolResult(result) = handle.await_response().await.expect("response") else { panic!("not a tool result") };
    let text = text_of(&result);
    assert!(text.contains("expired") && text.contains("0 of 1"), "{text}");
    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir(), "an unapproved delete ran");
    let progress: Vec<Value> = test_client
        .received()
        .into_iter()
        .filter(|m| m["method"] == "notifications/progress" && m["params"]["progressToken"] == token)
        .collect();
    assert!(progress.len() >= 2, "progress while waiting: {progress:?}");
    assert!(progress[0]["params"]["message"].as_str().is_some_and(|m| m.contains("Waiting for approval ap-")), "{progress:?}");
    client.cancel().await.expect("close");
    let records = export(&setup.data_dir());
    let settled = records_of(&records, "approval_settled");
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0]["decision"], "expired");
    assert!(records_of(&records, "call_forwarded").is_empty());
}

#[tokio::test]
async fn a_restart_cancels_holds_whose_call_is_gone() {
    let setup = setup("");
    let mut gateway = setup.http().await;
    let test_client = TestClient::new();
    let client = gateway.client(test_client.clone()).await;
    let waiting = tokio::spawn(async move {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(call("demo__delete_bucket", json!({"bucket": "tmp-scratch"}))));
        let _ = client.send_request_with_option(request, PeerRequestOptions::no_options()).await.expect("send").await_response().await;
    });
    assert!(held(&test_client).await, "no hold progress");
    gateway.child.start_kill().expect("kill");
    let _ = gateway.child.wait().await;
    waiting.abort();
    // The second start settles the orphan before it serves.
    let mut second = setup.http().await;
    second.child.start_kill().expect("kill");
    let _ = second.child.wait().await;
    let records = export(&setup.data_dir());
    let requested = records_of(&records, "approval_requested");
    assert_eq!(requested.len(), 1, "{records:?}");
    let settled = records_of(&records, "approval_settled");
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0]["decision"], "cancelled");
    assert_eq!(settled[0]["reason"], "gateway restarted");
    assert_eq!(settled[0]["approval_id"], requested[0]["approval_id"]);
    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir());
}
