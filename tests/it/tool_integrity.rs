//! Tool integrity through the real binary: what a downstream changes about its tools is
//! checked before any client can call the new definition, a held call runs only on the
//! definition that was approved, and tool-list storms are coalesced.
//!
//! The downstream is `airlock demo-tools`; its `change_tools` tool redefines, adds or
//! removes tools as its `tools/list` serves them and sends `tools/list_changed`, like a
//! server that changes under the gateway.

use std::process::Command;
use std::time::Duration;

use rmcp::model::{CallToolResult, Tool};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::util::{ALLOW_ALL, HttpGateway, Setup, TestClient, airlock, call, export, text_of};

/// A correctness wait for something the gateway must get to (not a timing assertion).
const LIMIT: Duration = Duration::from_secs(60);

fn risk_of(tools: &[Tool], name: &str) -> Option<String> {
    let tool = tools.iter().find(|t| t.name == name)?;
    tool.meta.as_ref()?.0.get("airlock/risk")?.as_str().map(str::to_owned)
}

/// Polls `tools/list` until `check` holds for it; panics after `LIMIT`.
async fn until_listed(client: &RunningService<RoleClient, TestClient>, what: &str, check: impl Fn(&[Tool]) -> bool) -> Vec<Tool> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let tools = client.list_all_tools().await.expect("tools/list");
        if check(&tools) {
            return tools;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gateway never listed {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn change_tools(client: &RunningService<RoleClient, TestClient>, args: Value) -> CallToolResult {
    let result = client.call_tool(call("demo__change_tools", args)).await.expect("change_tools");
    assert_ne!(result.is_error, Some(true), "change_tools: {}", text_of(&result));
    result
}

fn records_of<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

fn decision_for<'a>(records: &'a [Value], call_id: &Value) -> &'a Value {
    records.iter().find(|r| r["kind"] == "decision" && &r["call_id"] == call_id).expect("every received call has a decision")
}

/// `target` is low risk (read-only) and takes a string; it is swapped for one taking an
/// integer while callers keep sending integers, with 200 other tools changed in the same
/// list (which, before the fix, delayed the change check by one durable append each). A
/// call with an integer can pass validation only against the new definition, so every
/// such call must have been decided on it as critical.
#[tokio::test]
async fn a_swapped_tool_is_critical_in_the_very_catalog_that_first_shows_it() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n[approvals]\ntimeout = \"1s\"\n");
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let client = setup.stdio(TestClient::new()).await;
    let string_schema = json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]});
    let mut set = serde_json::Map::new();
    set.insert("target".into(), json!({"inputSchema": string_schema, "annotations": {"readOnlyHint": true}}));
    for i in 0..200 {
        set.insert(format!("a{i:03}"), json!({"description": "filler"}));
    }
    change_tools(&client, json!({"set": set})).await;
    let tools = until_listed(&client, "demo__target", |t| t.iter().any(|t| t.name == "demo__target")).await;
    assert_eq!(risk_of(&tools, "demo__target").as_deref(), Some("low"));

    let mut racers = Vec::new();
    for _ in 0..6 {
        let peer = client.peer().clone();
        racers.push(tokio::spawn(async move {
            for _ in 0..5000 {
                let result = peer.call_tool(call("demo__target", json!({"text": 5}))).await.expect("call");
                let text = text_of(&result);
                if !text.starts_with("Invalid arguments") {
                    return text;
                }
            }
            String::from("the swap never became visible")
        }));
    }
    let integer_schema = json!({"type": "object", "properties": {"text": {"type": "integer"}}, "required": ["text"]});
    let mut swap = serde_json::Map::new();
    swap.insert("target".into(), json!({"inputSchema": integer_schema}));
    for i in 0..200 {
        swap.insert(format!("a{i:03}"), json!({"description": "filler, changed"}));
    }
    change_tools(&client, json!({"set": swap})).await;
    for racer in racers {
        let text = racer.await.expect("racer");
        assert!(text.contains("changed since it was accepted"), "a call on the new definition was not held: {text}");
        assert!(!text.contains("called target"), "a call ran on the new definition at the old risk: {text}");
    }
    client.cancel().await.expect("close");

    let records = export(&setup.data_dir());
    let mut held = 0;
    for received in records_of(&records, "call_received").into_iter().filter(|r| r["tool"] == "demo__target") {
        assert_eq!(received["args"]["text"], 5);
        let decision = decision_for(&records, &received["call_id"]);
        match decision["decision"].as_str() {
            Some("invalid_arguments") => {}
            Some("approve") => {
                assert_eq!(decision["risk"], "critical", "{decision}");
                held += 1;
            }
            _ => panic!("a call on the new definition was decided at the old risk: {decision}"),
        }
    }
    assert!(held >= 6, "every racer saw the new definition held");
    let changed = records_of(&records, "tool_changed");
    assert_eq!(changed.len(), 201, "target and the 200 others, each once");
    assert!(changed.iter().all(|r| r["risk"] == "critical" && r["detail"]["fingerprint"].as_str().is_some_and(|f| f.starts_with("v2:"))));
    // The 201 tools were added at run time: logged, and trusted by default.
    let added = records_of(&records, "tool_added");
    assert_eq!(added.len(), 201);
    let target = added.iter().find(|r| r["tool"] == "demo__target").expect("target added");
    assert_eq!(target["risk"], "low");
    assert_eq!(target["detail"]["status"], "new");
}

/// A token-authenticated HTTP setup: carol calls, bob approves; role grants and bucket
/// deletions need one approver; `change_tools` runs.
fn http_setup() -> Setup {
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n[approvals]\ntimeout = \"10m\"\n");
    for (name, token) in [("carol", "tok-carol-0123456789"), ("bob", "tok-bob-0123456789")] {
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
        config.push_str(&format!("\n[[identity.tokens]]\nname = \"{name}\"\nsha256 = \"{digest}\"\n"));
    }
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy(
        "p",
        "[[rule]]\nid = \"deletes\"\ntools = [\"demo__delete_bucket\"]\neffect = \"approve\"\nquorum = 1\nreason = \"deletes need a person\"\n\n\
         [[rule]]\nid = \"retool\"\ntools = [\"demo__change_tools\"]\neffect = \"allow\"\nreason = \"the test changes tools\"\n",
    );
    setup
}

async fn mcp_as(gateway: &HttpGateway, token: &str) -> RunningService<RoleClient, TestClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token);
    TestClient::new().serve(StreamableHttpClientTransport::from_config(config)).await.expect("initialize over HTTP")
}

/// Waits for the pending approval of `tool` and returns its id.
async fn pending_id(gateway: &HttpGateway, tool: &str) -> String {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let body: Value = client
            .get(format!("{}/api/v1/approvals?state=pending", gateway.url))
            .bearer_auth("tok-bob-0123456789")
            .send()
            .await
            .expect("list approvals")
            .json()
            .await
            .expect("json");
        let found = body.as_array().or_else(|| body["approvals"].as_array()).and_then(|list| {
            list.iter().find(|a| a["tool"] == tool).and_then(|a| a["id"].as_str()).map(str::to_owned)
        });
        if let Some(id) = found {
            return id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pending approval for {tool}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Holds a bucket deletion, lets `change` happen to the tool, waits until the gateway
/// lists the result, approves as bob, and returns what the caller got and the log.
async fn approve_after(change: Value, listed: fn(&[Tool]) -> bool) -> (String, Setup, String) {
    let setup = http_setup();
    let mut gateway = setup.http().await;
    let carol = mcp_as(&gateway, "tok-carol-0123456789").await;
    let peer = carol.peer().clone();
    let held = tokio::spawn(async move {
        peer.call_tool(call("demo__delete_bucket", json!({"bucket": "tmp-scratch"}))).await.expect("held call")
    });
    let id = pending_id(&gateway, "demo__delete_bucket").await;
    change_tools(&carol, change).await;
    until_listed(&carol, "the change", listed).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/approvals/{id}/decision", gateway.url))
        .bearer_auth("tok-bob-0123456789")
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .expect("decide");
    assert!(response.status().is_success(), "bob's approval was taken: {}", response.status());
    let result = tokio::time::timeout(LIMIT, held).await.expect("the held call answered").expect("join");
    assert_eq!(result.is_error, Some(true));
    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir(), "the held call ran on a changed tool");
    carol.cancel().await.expect("close");
    let _ = gateway.child.kill().await;
    (text_of(&result), setup, id)
}

fn assert_cancelled_in_log(setup: &Setup, id: &str, why: &str) {
    let records = export(&setup.data_dir());
    let settled: Vec<&Value> = records_of(&records, "approval_settled").into_iter().filter(|r| r["approval_id"] == id).collect();
    let states: Vec<&Value> = settled.iter().map(|r| &r["decision"]).collect();
    assert_eq!(states, [&json!("approved"), &json!("cancelled")], "{settled:?}");
    assert!(settled[1]["reason"].as_str().is_some_and(|r| r.contains(why)), "{}", settled[1]);
    let forwarded = records_of(&records, "call_forwarded");
    assert!(!forwarded.iter().any(|r| r["tool"] == "demo__delete_bucket"), "nothing was forwarded");
    assert!(!setup.sandbox("demo").join("receipts.jsonl").exists(), "the downstream received a receipt");
}

#[tokio::test]
async fn a_held_call_whose_tool_changed_while_it_waited_is_cancelled_after_its_approval() {
    let change = json!({"set": {"delete_bucket": {"description": "Deletes a bucket and every backup of it."}}});
    let listed = |tools: &[Tool]| risk_of(tools, "demo__delete_bucket").as_deref() == Some("critical");
    let (text, setup, id) = approve_after(change, listed).await;
    let why = "cancelled: tool demo__delete_bucket changed while the call waited; a new call needs a new approval";
    assert!(text.contains(why) && text.contains("not forwarded"), "{text}");
    assert_cancelled_in_log(&setup, &id, why);
}

#[tokio::test]
async fn a_held_call_whose_tool_was_removed_while_it_waited_is_cancelled_after_its_approval() {
    let change = json!({"remove": ["delete_bucket"]});
    let listed = |tools: &[Tool]| !tools.iter().any(|t| t.name == "demo__delete_bucket");
    let (text, setup, id) = approve_after(change, listed).await;
    let why = "cancelled: tool demo__delete_bucket was removed while the call waited; a new call needs a new approval";
    assert!(text.contains(why), "{text}");
    assert_cancelled_in_log(&setup, &id, why);
}

/// The title, `_meta` (a UI resource added unseen), the output schema and the icons are
/// part of what a client is shown: changing any one of them is a change.
#[tokio::test]
async fn title_meta_output_schema_and_icons_are_covered_by_the_fingerprint() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n[approvals]\ntimeout = \"1s\"\n");
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let client = setup.stdio(TestClient::new()).await;
    let changed = ["demo__echo", "demo__read_customer", "demo__search_logs", "demo__content_gallery"];
    let tools = client.list_all_tools().await.expect("list");
    for name in changed {
        assert_eq!(risk_of(&tools, name).as_deref(), Some("low"), "{name}");
    }
    change_tools(
        &client,
        json!({"set": {
            "echo": {"title": "Echo (and upload)"},
            "read_customer": {"_meta": {"ui/resourceUri": "ui://demo/exfiltrate"}},
            "search_logs": {"outputSchema": {"type": "object", "properties": {"secrets": {"type": "string"}}}},
            "content_gallery": {"icons": [{"src": "https://example.com/icon.png"}]},
        }}),
    )
    .await;
    until_listed(&client, "all four as critical", |t| changed.iter().all(|n| risk_of(t, n).as_deref() == Some("critical"))).await;
    let held = client.call_tool(call("demo__echo", json!({"text": "x"}))).await.expect("call");
    assert!(text_of(&held).contains("changed since it was accepted"), "{}", text_of(&held));
    client.cancel().await.expect("close");
    let records = export(&setup.data_dir());
    let mut logged: Vec<&str> = records_of(&records, "tool_changed").iter().filter_map(|r| r["tool"].as_str()).collect();
    logged.sort_unstable();
    let mut expected = changed.to_vec();
    expected.sort_unstable();
    assert_eq!(logged, expected);
}

/// With `prefix_tools = false`, two servers offer `echo`; the first serves it. When it
/// drops `echo`, the second one's takes the name: a change, held like one.
#[tokio::test]
async fn a_name_taken_over_by_another_server_is_held_like_a_change() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\nprefix_tools = false\n[approvals]\ntimeout = \"1s\"\n");
    setup.demo("one");
    setup.demo("two");
    setup.policy("allow-all", ALLOW_ALL);
    let client = setup.stdio(TestClient::new()).await;
    let ok = client.call_tool(call("echo", json!({"text": "from one"}))).await.expect("call");
    assert_eq!(text_of(&ok), "from one");
    let result = client.call_tool(call("change_tools", json!({"remove": ["echo"]}))).await.expect("call");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    until_listed(&client, "echo as critical", |t| risk_of(t, "echo").as_deref() == Some("critical")).await;
    let held = client.call_tool(call("echo", json!({"text": "from two"}))).await.expect("call");
    let text = text_of(&held);
    assert!(text.contains("changed since it was accepted") && text.contains("expired"), "{text}");
    client.cancel().await.expect("close");
    let records = export(&setup.data_dir());
    let changed = records_of(&records, "tool_changed");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["tool"], "echo");
    assert_eq!(changed[0]["detail"]["server"], "two");
}

fn accept(setup: &Setup, name: &str) {
    for _ in 0..100 {
        let out = Command::new(airlock()).args(["tools", "accept", name, "--config"]).arg(setup.config()).output().expect("run");
        if out.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("airlock tools accept {name} failed");
}

/// `new_tools = "hold"`: a tool a downstream adds while the gateway runs is logged and is
/// critical until accepted; once accepted, the same tool added again is trusted.
#[tokio::test]
async fn with_new_tools_hold_a_tool_added_at_run_time_is_critical_until_accepted() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\nnew_tools = \"hold\"\n[approvals]\ntimeout = \"1s\"\n");
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let add_late = |client: &RunningService<RoleClient, TestClient>| {
        let peer = client.peer().clone();
        async move { peer.call_tool(call("demo__add_tool", json!({"name": "late"}))).await.expect("add_tool") }
    };
    let client = setup.stdio(TestClient::new()).await;
    add_late(&client).await;
    let tools = until_listed(&client, "demo__late", |t| t.iter().any(|t| t.name == "demo__late")).await;
    assert_eq!(risk_of(&tools, "demo__late").as_deref(), Some("critical"));
    let held = client.call_tool(call("demo__late", json!({"text": "hi"}))).await.expect("call");
    let text = text_of(&held);
    assert!(text.contains("added while the gateway ran") && !text.contains("called late"), "{text}");
    client.cancel().await.expect("close");
    let records = export(&setup.data_dir());
    let added = records_of(&records, "tool_added");
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["tool"], "demo__late");
    assert_eq!(added[0]["risk"], "critical");
    assert_eq!(added[0]["detail"]["status"], "unaccepted");
    assert!(added[0]["detail"]["fingerprint"].as_str().is_some_and(|f| f.starts_with("v2:")));

    accept(&setup, "demo__late");
    let client = setup.stdio(TestClient::new()).await;
    add_late(&client).await;
    let tools = until_listed(&client, "demo__late", |t| t.iter().any(|t| t.name == "demo__late")).await;
    assert_eq!(risk_of(&tools, "demo__late").as_deref(), Some("low"), "accepted: its own risk again");
    let ran = client.call_tool(call("demo__late", json!({"text": "hi"}))).await.expect("call");
    assert_eq!(text_of(&ran), "called late hi");
    client.cancel().await.expect("close");
}

/// 3,000 `tools/list_changed` notifications cost a handful of `tools/list` requests, not
/// one each (counted by the downstream), and the change they announced is seen.
#[tokio::test]
async fn a_storm_of_list_changed_notifications_is_coalesced() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    change_tools(&client, json!({"set": {"after_storm": {"description": "added during a storm"}}, "notifications": 3000})).await;
    until_listed(&client, "demo__after_storm", |t| t.iter().any(|t| t.name == "demo__after_storm")).await;
    let served = |result: &CallToolResult| {
        serde_json::from_str::<Value>(&text_of(result)).ok().and_then(|v| v["tools_list_served"].as_u64()).expect("count")
    };
    // Let a trailing refresh land before counting (the count only grows).
    let mut count = served(&change_tools(&client, json!({"notifications": 0})).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    count = count.max(served(&change_tools(&client, json!({"notifications": 0})).await));
    assert!((2..=20).contains(&count), "3000 notifications made {count} tools/list requests");
    let echo = client.call_tool(call("demo__echo", json!({"text": "still serving"}))).await.expect("call");
    assert_eq!(text_of(&echo), "still serving");
    client.cancel().await.expect("close");
}

/// The version-1 fingerprint earlier releases stored: SHA-256 of the canonical JSON of the
/// exposed name, description, input schema and annotations (computed here from the tool
/// as the downstream serves it, independently of the gateway's code).
fn v1_fingerprint(listed: &Tool) -> String {
    let description = listed.description.as_deref().unwrap_or("");
    let original = description.split_once("] ").map_or("", |(_, rest)| rest);
    let value = json!({
        "name": listed.name,
        "description": original,
        "inputSchema": listed.input_schema.as_ref(),
        "annotations": listed.annotations,
    });
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &airlock::audit::canonical(&value)))
}

/// A data dir written by a release with version-1 fingerprints: tools whose version-1
/// fingerprint still matches are upgraded in place (and logged), not flagged; a tool
/// that changed while the gateway was down is still a change.
#[tokio::test]
async fn version_1_fingerprints_are_upgraded_without_flagging_unchanged_tools() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let tools = client.list_all_tools().await.expect("list");
    client.cancel().await.expect("close");
    // The gateway `serve` started outlives its client: stop it to open its database.
    crate::util::stop_gateway(&setup.data_dir());
    let state = setup.data_dir().join("state");
    let db = (0..100)
        .find_map(|_| sled::open(&state).ok().or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        }))
        .expect("the state database was released");
    let tree = db.open_tree("fingerprints").expect("tree");
    for tool in &tools {
        let v1 = if tool.name == "demo__echo" { "0".repeat(64) } else { v1_fingerprint(tool) };
        tree.insert(tool.name.as_bytes(), serde_json::to_vec(&json!({"accepted": v1, "seen": v1})).expect("json")).expect("insert");
    }
    tree.flush().expect("flush");
    drop(tree);
    drop(db);

    let client = setup.stdio(TestClient::new()).await;
    let again = client.list_all_tools().await.expect("list");
    for tool in &again {
        let expected = if tool.name == "demo__echo" { Some("critical".to_owned()) } else { risk_of(&tools, &tool.name) };
        assert_eq!(risk_of(&again, &tool.name), expected, "{}", tool.name);
    }
    client.cancel().await.expect("close");
    let records = export(&setup.data_dir());
    let upgraded = records_of(&records, "fingerprint_upgraded");
    assert_eq!(upgraded.len(), tools.len() - 1, "every unchanged tool upgraded once");
    assert!(upgraded.iter().all(|r| r["detail"]["from"].as_str().is_some_and(|f| f.starts_with("v1:"))
        && r["detail"]["to"].as_str().is_some_and(|t| t.starts_with("v2:"))));
    let changed = records_of(&records, "tool_changed");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["tool"], "demo__echo");
    assert_eq!(changed[0]["detail"]["accepted"], format!("v1:{}", "0".repeat(64)));

    // Upgraded for good: the next start finds nothing to upgrade.
    let client = setup.stdio(TestClient::new()).await;
    client.list_all_tools().await.expect("list");
    client.cancel().await.expect("close");
    assert_eq!(records_of(&export(&setup.data_dir()), "fingerprint_upgraded").len(), tools.len() - 1);
}
