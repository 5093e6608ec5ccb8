//! What the 2026-07-28 revision asks of an intermediary, through the real binary over raw
//! HTTP: `Mcp-Method` / `Mcp-Name` headers that disagree with the body are refused with
//! 400 before anything is decided or forwarded (policy is enforced on the body's tool
//! name, an intermediary in front may route on the header); `server/discover` names the
//! extensions Airlock serves; `tools/list` comes in one order. Airlock checks the headers
//! itself for the requests rmcp does not (a 2025-11-25 session, no version header).

use serde_json::{Value, json};

use crate::util::{HttpGateway, Setup, export};

const VERSION: &str = "2026-07-28";

/// Headers given, the body's method, its params.
type Case = (&'static [(&'static str, &'static str)], &'static str, Value);

/// A stateless 2026-07-28 request: its own `_meta`, the standard headers as given.
pub(crate) async fn post(gateway: &HttpGateway, headers: &[(&str, &str)], method: &str, params: Value) -> (u16, Value) {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "headers-test", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut request = reqwest::Client::new()
        .post(format!("{}/mcp", gateway.url))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("reach the gateway");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, message(&text))
}

/// The JSON-RPC message of a JSON or an SSE body.
fn message(text: &str) -> Value {
    if let Ok(value) = serde_json::from_str(text) {
        return value;
    }
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .find_map(|data| serde_json::from_str(data.trim()).ok())
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

async fn stop_and_export(mut gateway: HttpGateway, setup: &Setup) -> Vec<Value> {
    let _ = gateway.child.kill().await;
    export(&setup.data_dir())
}

#[tokio::test]
async fn a_name_or_method_header_that_disagrees_with_the_body_is_refused_and_nothing_is_forwarded() {
    let setup = Setup::with_demo();
    let gateway = setup.http().await;
    let args = json!({"name": "demo__grant_role", "arguments": {"user": "eve", "role": "admin"}});
    let cases: [Case; 5] = [
        // The header names a harmless tool; the body calls another.
        (&[("mcp-method", "tools/call"), ("mcp-name", "demo__echo")], "tools/call", args.clone()),
        // The header calls it a list.
        (&[("mcp-method", "tools/list"), ("mcp-name", "demo__grant_role")], "tools/call", args.clone()),
        // No name header at all.
        (&[("mcp-method", "tools/call")], "tools/call", args.clone()),
        (&[("mcp-method", "prompts/get"), ("mcp-name", "demo__other")], "prompts/get", json!({"name": "demo__prompt"})),
        (&[("mcp-method", "resources/read"), ("mcp-name", "file:///etc/hosts")], "resources/read", json!({"uri": "file:///etc/passwd"})),
    ];
    for (headers, method, params) in cases {
        let (status, body) = post(&gateway, headers, method, params).await;
        assert_eq!(status, 400, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], -32020, "{headers:?}: {body}");
    }
    // The same request with agreeing headers goes through: the refusals were the headers.
    let echo = json!({"name": "demo__echo", "arguments": {"text": "hi"}});
    let (status, body) = post(&gateway, &[("mcp-method", "tools/call"), ("mcp-name", "demo__echo")], "tools/call", echo).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["isError"], false, "{body}");

    let records = stop_and_export(gateway, &setup).await;
    let received: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call_received").collect();
    assert_eq!(received.len(), 1, "only the agreeing call was received: {received:?}");
    assert_eq!(received[0]["tool"], "demo__echo");
    assert!(!setup.sandbox("demo").join("roles.json").exists() || !std::fs::read_to_string(setup.sandbox("demo").join("roles.json")).unwrap_or_default().contains("eve"));
}

#[tokio::test]
async fn server_discover_names_the_tasks_extension_and_tools_list_has_one_order() {
    let setup = Setup::with_demo();
    let gateway = setup.http().await;
    let (status, body) = post(&gateway, &[("mcp-method", "server/discover")], "server/discover", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let extensions = &body["result"]["capabilities"]["extensions"];
    assert!(extensions.get("io.modelcontextprotocol/tasks").is_some(), "{body}");

    let mut orders = Vec::new();
    for _ in 0..3 {
        let (status, body) = post(&gateway, &[("mcp-method", "tools/list")], "tools/list", json!({})).await;
        assert_eq!(status, 200, "{body}");
        let names: Vec<String> = body["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        orders.push(names);
    }
    let mut sorted = orders[0].clone();
    sorted.sort();
    assert!(orders[0].len() > 3, "{:?}", orders[0]);
    assert_eq!(orders[0], sorted, "sorted by name");
    assert!(orders.iter().all(|o| *o == orders[0]), "{orders:?}");
}

/// A 2025-11-25 session over raw HTTP: its id, after `initialize` and `initialized`.
async fn legacy_session(gateway: &HttpGateway) -> String {
    let client = reqwest::Client::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "headers-test", "version": "0"}}});
    let response = client
        .post(format!("{}/mcp", gateway.url))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("initialize");
    assert_eq!(response.status(), 200);
    let session = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).expect("session id").to_owned();
    let _ = response.text().await;
    let (status, _) = legacy_post(gateway, &session, &[], json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!(status, 202);
    session
}

/// One message in a 2025-11-25 session (`MCP-Protocol-Version: 2025-11-25`), headers as given.
async fn legacy_post(gateway: &HttpGateway, session: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/mcp", gateway.url))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", session)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("reach the gateway");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, message(&text))
}

#[tokio::test]
async fn disagreeing_headers_are_refused_in_a_2025_11_25_session_too_and_nothing_is_forwarded() {
    let setup = Setup::with_demo();
    let gateway = setup.http().await;
    let session = legacy_session(&gateway).await;
    let grant = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "demo__grant_role", "arguments": {"user": "eve", "role": "admin"}}});
    let cases: [(&[(&str, &str)], Value); 5] = [
        (&[("mcp-name", "demo__echo")], grant(1)),
        (&[("mcp-method", "tools/list")], grant(2)),
        // The Base64 form of `demo__echo`.
        (&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?ZGVtb19fZWNobw==?=")], grant(3)),
        (&[("mcp-name", "demo__echo"), ("mcp-name", "demo__grant_role")], grant(4)),
        (&[("mcp-name", "demo://customers")], json!({"jsonrpc": "2.0", "id": 5, "method": "resources/read", "params": {"uri": "demo://secrets"}})),
    ];
    for (headers, body) in cases {
        let id = body["id"].clone();
        let (status, answer) = legacy_post(&gateway, &session, headers, body).await;
        assert_eq!(status, 400, "{headers:?}: {answer}");
        assert_eq!((&answer["error"]["code"], &answer["id"]), (&json!(-32020), &id), "{headers:?}: {answer}");
    }
    // Agreeing headers, and none at all (what a 2025-11-25 client sends), go through.
    let echo = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "demo__echo", "arguments": {"text": "hi"}}});
    let (status, answer) = legacy_post(&gateway, &session, &[("mcp-method", "tools/call"), ("mcp-name", "demo__echo")], echo(6)).await;
    assert_eq!((status, &answer["result"]["isError"]), (200, &json!(false)), "{answer}");
    let (status, answer) = legacy_post(&gateway, &session, &[], echo(7)).await;
    assert_eq!((status, &answer["result"]["isError"]), (200, &json!(false)), "{answer}");

    let records = stop_and_export(gateway, &setup).await;
    let received: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call_received" || r["kind"] == "resource_read").collect();
    assert_eq!(received.len(), 2, "only the two echoes were received: {received:?}");
    assert!(received.iter().all(|r| r["tool"] == "demo__echo"), "{received:?}");
    assert!(!setup.sandbox("demo").join("roles.json").exists() || !std::fs::read_to_string(setup.sandbox("demo").join("roles.json")).unwrap_or_default().contains("eve"));
}
