//! Raw protocol behaviour: malformed JSON-RPC over stdio, the legacy SSE transport, and
//! the Host/Origin guard.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{RAW_INIT as INIT, RawStdio, Setup};


#[tokio::test]
async fn malformed_jsonrpc_over_stdio_gets_an_error_and_the_gateway_keeps_serving() {
    let setup = Setup::with_demo();
    let mut gateway = RawStdio::spawn(&setup);
    gateway.initialize().await;

    gateway.send("{this is not json").await;
    let parse_error = gateway.next().await;
    assert_eq!(parse_error["error"]["code"], -32700, "{parse_error}");
    assert_eq!(parse_error["id"], Value::Null);

    gateway.send(r#"{"jsonrpc":"2.0","id":7,"params":42}"#).await;
    let invalid = gateway.next().await;
    assert_eq!(invalid["error"]["code"], -32600, "{invalid}");
    assert_eq!(invalid["id"], 7);

    gateway.send(r#"{"jsonrpc":"2.0","id":8,"method":"no/such/method"}"#).await;
    let unknown = gateway.next().await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    let call = json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"ok"}}});
    gateway.send(&call.to_string()).await;
    let answer = gateway.next().await;
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["result"]["content"][0]["text"], "ok", "{answer}");
}

#[tokio::test]
async fn legacy_sse_transport_serves_a_session() {
    let setup = Setup::with_demo();
    let gateway = setup.http().await;
    let http = reqwest::Client::new();
    let mut events = http.get(format!("{}/sse", gateway.url)).send().await.expect("GET /sse");
    assert!(events.status().is_success());
    let mut buffer = String::new();
    let mut next_event = async || -> (String, String) {
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut kind = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") { kind = v.trim().to_owned(); }
                    if let Some(v) = line.strip_prefix("data:") { data.push_str(v.trim()); }
                }
                if !kind.is_empty() || !data.is_empty() { return (kind, data); }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), events.chunk()).await.expect("event in time").expect("chunk").expect("stream open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let (kind, endpoint) = next_event().await;
    assert_eq!(kind, "endpoint");
    let post = |body: String| http.post(format!("{}{}", gateway.url, endpoint)).header("content-type", "application/json").body(body).send();
    assert_eq!(post(INIT.to_owned()).await.expect("POST").status(), 202);
    let (kind, data) = next_event().await;
    assert_eq!(kind, "message");
    assert_eq!(serde_json::from_str::<Value>(&data).expect("json")["id"], 1);
    post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned()).await.expect("POST");
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"sse"}}});
    post(call.to_string()).await.expect("POST");
    let (_, data) = next_event().await;
    let answer: Value = serde_json::from_str(&data).expect("json");
    assert_eq!(answer["result"]["content"][0]["text"], "sse", "{answer}");
    let bad = post("{nope".to_owned()).await.expect("POST");
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.expect("json")["error"]["code"], -32700);
}

#[tokio::test]
async fn requests_with_a_foreign_host_or_origin_are_refused() {
    let setup = Setup::with_demo();
    let gateway = setup.http().await;
    let http = reqwest::Client::new();
    let ok = http.get(format!("{}/healthz", gateway.url)).send().await.expect("GET");
    assert_eq!(ok.status(), 200);
    // The gateway listens before its downstreams are up: `demo` is `Starting`, then `Ready`.
    let mut health = ok.json::<Value>().await.expect("json")["downstreams"]["demo"].clone();
    for _ in 0..600 {
        if health == "Ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = http.get(format!("{}/healthz", gateway.url)).send().await.expect("GET");
        health = again.json::<Value>().await.expect("json")["downstreams"]["demo"].clone();
    }
    assert_eq!(health, "Ready");
    let rebinding = http.get(format!("{}/healthz", gateway.url)).header("host", "attacker.example").send().await.expect("GET");
    assert_eq!(rebinding.status(), 403);
    let origin = http.post(format!("{}/mcp", gateway.url)).header("origin", "https://attacker.example").body(INIT).send().await.expect("POST");
    assert_eq!(origin.status(), 403);
}
