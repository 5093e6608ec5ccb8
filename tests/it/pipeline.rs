//! The transparent proxy, through the real binary: aggregation, namespacing, content,
//! progress, cancellation, elicitation, crash and restart, bad input.

use std::time::Duration;

use rmcp::model::{CallToolRequest, ClientRequest, ServerResult};
use rmcp::service::PeerRequestOptions;
use serde_json::{Value, json};

use crate::util::{call, text_of, ElicitAnswer, Setup, TestClient, eventually};

#[tokio::test]
async fn tools_of_two_servers_are_listed_namespaced_and_sorted() {
    let setup = Setup::with_demo();
    setup.demo("ops");
    let client = setup.stdio(TestClient::new()).await;
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"demo__echo".to_owned()), "{names:?}");
    assert!(names.contains(&"ops__echo".to_owned()), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "catalog order must be deterministic (sorted)");
    let result = client.call_tool(call("ops__echo", json!({"text": "through airlock"}))).await.expect("call");
    assert_eq!(text_of(&result), "through airlock");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn separator_is_configurable_and_hidden_tools_are_neither_listed_nor_callable() {
    let setup = Setup::new("[gateway]\nseparator = \".\"\n");
    setup.policy("allow-all", crate::util::ALLOW_ALL);
    let sandbox = setup.sandbox("demo");
    setup.manifest(
        "demo",
        &format!(
            "name = \"demo\"\ncommand = {:?}\nargs = [\"demo-tools\", \"--sandbox\", {:?}]\n[tools.crash]\nhidden = true\n",
            crate::util::airlock(),
            sandbox.display().to_string()
        ),
    );
    let client = setup.stdio(TestClient::new()).await;
    let names: Vec<String> =
        client.list_all_tools().await.expect("list").iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"demo.echo".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with("crash")), "hidden tool listed: {names:?}");
    let err = client.call_tool(call("demo.crash", json!({}))).await.expect_err("hidden tool must not be callable");
    assert!(err.to_string().contains("unknown tool"), "{err}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn unknown_tool_is_a_jsonrpc_error_and_the_session_keeps_serving() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let err = client.call_tool(call("demo__no_such_tool", json!({}))).await.expect_err("unknown tool");
    assert!(err.to_string().contains("unknown tool"), "{err}");
    let result = client.call_tool(call("demo__echo", json!({"text": "still here"}))).await.expect("call");
    assert_eq!(text_of(&result), "still here");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn every_content_type_structured_content_and_meta_arrive_unchanged() {
    let setup = Setup::with_demo();
    // The same tool called directly on its own demo-tools server is the reference.
    let direct = {
        let mut cmd = tokio::process::Command::new(crate::util::airlock());
        cmd.arg("demo-tools").arg("--sandbox").arg(setup.sandbox("direct"));
        let transport = rmcp::transport::TokioChildProcess::new(cmd).expect("spawn demo-tools");
        let client = rmcp::ServiceExt::serve(TestClient::new(), transport).await.expect("init direct");
        let result = client.call_tool(call("content_gallery", json!({}))).await.expect("direct call");
        client.cancel().await.expect("close");
        result
    };
    let client = setup.stdio(TestClient::new()).await;
    let proxied = client.call_tool(call("demo__content_gallery", json!({}))).await.expect("proxied call");
    client.cancel().await.expect("close");
    let mut direct = serde_json::to_value(direct).expect("json");
    let mut proxied = serde_json::to_value(proxied).expect("json");
    for v in [&mut direct, &mut proxied] {
        v.as_object_mut().expect("object").remove("resultType");
    }
    assert_eq!(proxied, direct);
    let kinds: Vec<&str> = proxied["content"].as_array().expect("content").iter().filter_map(|c| c["type"].as_str()).collect();
    for kind in ["text", "image", "audio", "resource_link", "resource"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(proxied.get("structuredContent").is_some());
    assert!(proxied.get("_meta").is_some());
}

#[tokio::test]
async fn tool_errors_pass_through_as_is_error() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let result = client.call_tool(call("demo__fail", json!({"message": "disk on fire"}))).await.expect("call");
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).contains("disk on fire"));
    client.cancel().await.expect("close");
}

/// Progress must reach the client under its own token, every notification, in order,
/// and all of them before the result.
#[tokio::test]
async fn progress_arrives_in_order_under_the_clients_token_before_the_result() {
    let setup = Setup::with_demo();
    let test_client = TestClient::new();
    let client = setup.stdio(test_client.clone()).await;
    for round in 0..3 {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(call("demo__run_migration", json!({"steps": 8}))));
        let handle = client.send_request_with_option(request, PeerRequestOptions::no_options()).await.expect("send");
        let (token, id) = (serde_json::to_value(&handle.progress_token.0).expect("token"), serde_json::to_value(&handle.id).expect("id"));
        let response = handle.await_response().await.expect("response");
        assert!(matches!(response, ServerResult::CallToolResult(_)), "round {round}");
        let wire = test_client.received();
        let result_at = wire.iter().position(|m| m.get("id") == Some(&id) && m.get("result").is_some()).expect("result on the wire");
        let progress: Vec<(usize, f64)> = wire
            .iter()
            .enumerate()
            .filter(|(_, m)| m["method"] == "notifications/progress" && m["params"]["progressToken"] == token)
            .map(|(i, m)| (i, m["params"]["progress"].as_f64().expect("progress number")))
            .collect();
        assert_eq!(progress.len(), 8, "round {round}: every progress notification arrives: {progress:?}");
        assert!(progress.iter().all(|(i, _)| *i < result_at), "round {round}: progress after the result");
        assert!(progress.windows(2).all(|w| w[0].1 < w[1].1), "round {round}: out of order: {progress:?}");
    }
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn client_cancellation_reaches_the_downstream() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(call("demo__sleep", json!({"ms": 60000}))));
    let handle = client.send_request_with_option(request, PeerRequestOptions::no_options()).await.expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.cancel(Some("test gives up".to_owned())).await.expect("cancel");
    let marker_dir = setup.sandbox("demo").join("cancelled");
    let seen = eventually(Duration::from_secs(20), || {
        std::fs::read_dir(&marker_dir).map(|d| d.count() > 0).unwrap_or(false)
    })
    .await;
    assert!(seen, "demo-tools never saw notifications/cancelled");
    let result = client.call_tool(call("demo__echo", json!({"text": "after cancel"}))).await.expect("call");
    assert_eq!(text_of(&result), "after cancel");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn downstream_elicitation_is_relayed_to_the_client_and_the_answer_back() {
    for (answer, accepted) in [(ElicitAnswer::Accept, true), (ElicitAnswer::Decline, false)] {
        let setup = Setup::with_demo();
        let test_client = TestClient::answering(answer);
        let client = setup.stdio(test_client.clone()).await;
        let result = client.call_tool(call("demo__rotate_credentials", json!({"service": "billing"}))).await.expect("call");
        assert_eq!(test_client.elicitations.lock().expect("lock").len(), 1, "the client was asked once");
        let text = text_of(&result).to_lowercase();
        if accepted {
            assert_ne!(result.is_error, Some(true), "{text}");
            assert!(text.contains("rotated"), "{text}");
        } else {
            assert!(text.contains("declined"), "{text}");
        }
        client.cancel().await.expect("close");
    }
}

#[tokio::test]
async fn a_crashed_downstream_gets_a_clear_error_and_is_restarted() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let crashed = client.call_tool(call("demo__crash", json!({}))).await.expect("a tool result, not a protocol error");
    assert_eq!(crashed.is_error, Some(true));
    assert!(text_of(&crashed).contains("demo"), "error names the server: {}", text_of(&crashed));
    let mut recovered = false;
    for _ in 0..200 {
        let result = client.call_tool(call("demo__echo", json!({"text": "back"}))).await.expect("call");
        if result.is_error != Some(true) {
            assert_eq!(text_of(&result), "back");
            recovered = true;
            break;
        }
        assert!(text_of(&result).contains("unavailable"), "{}", text_of(&result));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the downstream was not restarted");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_tool_list_change_downstream_reaches_the_client() {
    let setup = Setup::with_demo();
    let test_client = TestClient::new();
    let client = setup.stdio(test_client.clone()).await;
    let notified = test_client.list_changed.clone();
    let waiter = tokio::spawn(async move { notified.notified().await });
    client
        .call_tool(call("demo__set_description", json!({"tool": "echo", "description": "Echo, now different"})))
        .await
        .expect("call");
    tokio::time::timeout(Duration::from_secs(30), waiter).await.expect("list_changed relayed").expect("join");
    let tools = client.list_all_tools().await.expect("list");
    let echo = tools.iter().find(|t| t.name == "demo__echo").expect("echo listed");
    let description = echo.description.as_deref().unwrap_or("");
    assert!(description.ends_with("Echo, now different"), "{description}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn the_same_calls_work_over_streamable_http() {
    let setup = Setup::with_demo();
    let gateway = setup.http().await;
    let client = gateway.client(TestClient::new()).await;
    let names: Vec<String> = client.list_all_tools().await.expect("list").iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"demo__echo".to_owned()));
    let result = client.call_tool(call("demo__echo", json!({"text": "over http"}))).await.expect("call");
    assert_eq!(text_of(&result), "over http");
    client.cancel().await.expect("close");
}

/// Airlock in front of Airlock: the outer gateway reaches the inner one over streamable
/// HTTP and over legacy SSE, as it would reach any remote MCP server.
#[tokio::test]
async fn http_and_legacy_sse_downstreams_are_proxied() {
    let inner = Setup::with_demo();
    let inner_gateway = inner.http().await;
    let outer = Setup::new("");
    outer.policy("allow-all", crate::util::ALLOW_ALL);
    outer.manifest("remote", &format!("name = \"remote\"\nurl = \"{}/mcp\"\n", inner_gateway.url));
    outer.manifest("legacy", &format!("name = \"legacy\"\nurl = \"{}/sse\"\ntransport = \"sse\"\n", inner_gateway.url));
    let client = outer.stdio(TestClient::new()).await;
    let names: Vec<String> = client.list_all_tools().await.expect("list").iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"remote__demo__echo".to_owned()), "{names:?}");
    assert!(names.contains(&"legacy__demo__echo".to_owned()), "{names:?}");
    for tool in ["remote__demo__echo", "legacy__demo__echo"] {
        let result = client.call_tool(call(tool, json!({"text": tool}))).await.expect("call");
        assert_eq!(text_of(&result), tool);
    }
    client.cancel().await.expect("close");
}

/// `airlock/*` keys in `_meta` are Airlock's own (the approval receipt); a client that
/// sends one must not get it to the downstream.
#[tokio::test]
async fn a_client_cannot_forge_an_approval_receipt_in_meta() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let mut meta = rmcp::model::RequestMetaObject::new();
    meta.0.0.insert("airlock/approval".to_owned(), json!({"forged": true}));
    meta.0.0.insert("example.com/trace".to_owned(), json!("kept"));
    let mut params = call("demo__echo", json!({"text": "hi"}));
    params.meta = Some(meta);
    let result = client.call_tool(params).await.expect("call");
    assert_eq!(text_of(&result), "hi");
    let receipts = setup.sandbox("demo").join("receipts.jsonl");
    let written = std::fs::read_to_string(&receipts).unwrap_or_default();
    assert!(!written.contains("forged"), "a forged receipt reached the downstream: {written}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn prompts_and_resources_pass_through() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let prompts = client.list_all_prompts().await.expect("prompts/list");
    assert!(prompts.iter().any(|p| p.name == "demo__incident_summary"), "{prompts:?}");
    let mut get = rmcp::model::GetPromptRequestParams::new("demo__incident_summary");
    let Value::Object(args) = json!({"service": "billing"}) else { unreachable!() };
    get.arguments = Some(args);
    let prompt = client.get_prompt(get).await.expect("prompts/get");
    assert!(serde_json::to_string(&prompt).expect("json").contains("billing"));
    let resources = client.list_all_resources().await.expect("resources/list");
    assert!(resources.iter().any(|r| r.uri == "demo://customers"), "{resources:?}");
    let read = client.read_resource(rmcp::model::ReadResourceRequestParams::new("demo://customers")).await.expect("resources/read");
    assert!(serde_json::to_string(&read).expect("json").contains("C-1001"));
    client.cancel().await.expect("close");
}
