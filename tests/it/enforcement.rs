//! Enforcement through the real binary: nothing that fails a check reaches a downstream,
//! every tool shows its risk, a changed tool turns critical, and the log of a real
//! session verifies.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{call, text_of, ALLOW_ALL, Setup, TestClient, airlock, airlock_log, export};

fn received_session(records: &[Value]) -> Value {
    records.iter().find(|r| r["kind"] == "call_received").map(|r| r["session"].clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_denied_call_never_reaches_the_downstream() {
    let setup = Setup::enforcing();
    setup.policy(
        "prod",
        "[[rule]]\nid = \"no-prod-deletes\"\ntools = [\"demo__delete_bucket\"]\nwhen = { \"/bucket\" = { regex = \"^prod-\" } }\neffect = \"deny\"\nreason = \"production buckets are never deleted by agents\"\n",
    );
    let client = setup.stdio(TestClient::new()).await;
    let result = client.call_tool(call("demo__delete_bucket", json!({"bucket": "prod-customers"}))).await.expect("call");
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains("no-prod-deletes") && text.contains("production buckets"), "{text}");
    assert!(setup.sandbox("demo").join("buckets/prod-customers").is_dir(), "the bucket was deleted");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn an_invalid_argument_call_is_refused_naming_the_pointer_and_never_forwarded() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    // `initialize` does not wait for the downstreams; a tool list does, and demo-tools
    // seeds its sandbox before it answers, so what is read below is the seeded file.
    client.list_all_tools().await.expect("list");
    let roles = setup.sandbox("demo").join("roles.json");
    let before = std::fs::read_to_string(&roles).expect("demo-tools seeded roles.json before the gateway was ready");
    let result = client.call_tool(call("demo__grant_role", json!({"user": 42, "role": "viewer"}))).await.expect("call");
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains("/user"), "names the failing pointer: {text}");
    assert!(text.contains("not forwarded"), "{text}");
    assert_eq!(std::fs::read_to_string(&roles).expect("roles.json"), before, "the downstream acted on invalid arguments");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_held_call_without_a_decision_is_not_forwarded_and_expires() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n[approvals]\ntimeout = \"1s\"\n");
    setup.demo("demo");
    let client = setup.stdio(TestClient::new()).await;
    // delete_bucket is destructive → high → approve by default.
    let result = client.call_tool(call("demo__delete_bucket", json!({"bucket": "tmp-scratch"}))).await.expect("call");
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains("expired") && !text.contains("Denied"), "expiry is not denial: {text}");
    assert!(setup.sandbox("demo").join("buckets/tmp-scratch").is_dir(), "a held call ran");
    // A read-only tool is low risk → allowed by default.
    let read = client.call_tool(call("demo__read_customer", json!({"id": "C-1001"}))).await.expect("call");
    assert_ne!(read.is_error, Some(true), "{}", text_of(&read));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn every_tool_shows_its_risk_in_meta_and_description() {
    let setup = Setup::enforcing();
    setup.manifest(
        "demo",
        &format!(
            "name = \"demo\"\ncommand = {:?}\nargs = [\"demo-tools\", \"--sandbox\", {:?}]\n[tools.restart_service]\nrisk = \"critical\"\n",
            airlock(),
            setup.sandbox("demo").display().to_string()
        ),
    );
    let client = setup.stdio(TestClient::new()).await;
    let tools = client.list_all_tools().await.expect("list");
    let risk_of = |name: &str| {
        let tool = tools.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} listed"));
        let meta = tool.meta.as_ref().expect("_meta").0.get("airlock/risk").and_then(Value::as_str).expect("risk").to_owned();
        let description = tool.description.as_deref().unwrap_or("").to_owned();
        assert!(description.starts_with(&format!("[airlock risk: {meta}]")), "{description}");
        meta
    };
    assert_eq!(risk_of("demo__read_customer"), "low", "readOnlyHint");
    assert_eq!(risk_of("demo__delete_bucket"), "high", "destructive");
    assert_eq!(risk_of("demo__grant_role"), "medium", "destructiveHint false");
    assert_eq!(risk_of("demo__restart_service"), "critical", "the manifest wins over annotations");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_tool_that_changes_while_running_turns_critical_until_accepted() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n[approvals]\ntimeout = \"1s\"\n");
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let test_client = TestClient::new();
    let client = setup.stdio(test_client.clone()).await;
    let ok = client.call_tool(call("demo__echo", json!({"text": "before"}))).await.expect("call");
    assert_eq!(text_of(&ok), "before");
    let notified = test_client.list_changed.clone();
    let waiter = tokio::spawn(async move { notified.notified().await });
    client
        .call_tool(call("demo__set_description", json!({"tool": "echo", "description": "Echo (now also uploads your files)"})))
        .await
        .expect("call");
    tokio::time::timeout(Duration::from_secs(30), waiter).await.expect("list_changed").expect("join");
    let tools = client.list_all_tools().await.expect("list");
    let echo = tools.iter().find(|t| t.name == "demo__echo").expect("echo");
    assert_eq!(echo.meta.as_ref().and_then(|m| m.0.get("airlock/risk")), Some(&json!("critical")));
    // Even the allow-all policy cannot wave a changed tool through.
    let held = client.call_tool(call("demo__echo", json!({"text": "after"}))).await.expect("call");
    assert_eq!(held.is_error, Some(true));
    let text = text_of(&held);
    assert!(text.contains("changed since it was accepted") && text.contains("expired"), "held for approval: {text}");
    client.cancel().await.expect("close");

    let records = export(&setup.data_dir());
    let changed: Vec<&Value> = records.iter().filter(|r| r["kind"] == "tool_changed").collect();
    assert_eq!(changed.len(), 1, "one tool_changed record: {changed:?}");
    assert_eq!(changed[0]["tool"], "demo__echo");

    // The operator accepts the new definition; the tool is trusted again.
    let mut accepted = None;
    for _ in 0..100 {
        let out = Command::new(airlock()).args(["tools", "accept", "demo__echo", "--config"]).arg(setup.config()).output().expect("run");
        if out.status.success() {
            accepted = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(accepted.is_some(), "airlock tools accept failed");
    let test_client = TestClient::new();
    let client = setup.stdio(test_client.clone()).await;
    // The restarted demo server serves its original description again, which now differs
    // from the accepted one: still critical. Accepting follows what the server serves.
    let risk_of_echo = |tools: &[rmcp::model::Tool]| {
        let echo = tools.iter().find(|t| t.name == "demo__echo").expect("echo");
        echo.meta.as_ref().and_then(|m| m.0.get("airlock/risk")).cloned()
    };
    assert_eq!(risk_of_echo(&client.list_all_tools().await.expect("list")), Some(json!("critical")));
    // Once the server serves the accepted definition again, the tool is trusted and callable.
    let notified = test_client.list_changed.clone();
    let waiter = tokio::spawn(async move { notified.notified().await });
    client
        .call_tool(call("demo__set_description", json!({"tool": "echo", "description": "Echo (now also uploads your files)"})))
        .await
        .expect("call");
    tokio::time::timeout(Duration::from_secs(30), waiter).await.expect("list_changed").expect("join");
    assert_eq!(risk_of_echo(&client.list_all_tools().await.expect("list")), Some(json!("low")));
    let ok = client.call_tool(call("demo__echo", json!({"text": "trusted again"}))).await.expect("call");
    assert_eq!(text_of(&ok), "trusted again");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn the_log_of_a_real_session_verifies_and_holds_every_step() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n[audit]\nredact = [\"/text\"]\n");
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let client = setup.stdio(TestClient::new()).await;
    for i in 0..5 {
        let result = client.call_tool(call("demo__echo", json!({"text": format!("secret-{i}")}))).await.expect("call");
        assert_eq!(text_of(&result), format!("secret-{i}"));
    }
    client.cancel().await.expect("close");

    let verify = airlock_log(&setup.data_dir(), &["verify"]);
    assert!(verify.status.success(), "log verify failed: {}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    let records = export(&setup.data_dir());
    let kinds = |kind: &str| records.iter().filter(|r| r["kind"] == kind).count();
    assert_eq!(kinds("gateway_started"), 1);
    assert_eq!(kinds("session_opened"), 1);
    let opened = records.iter().find(|r| r["kind"] == "session_opened").expect("session_opened");
    assert_eq!(opened["session"], received_session(&records), "calls carry the session that opened");
    for kind in ["call_received", "decision", "call_forwarded", "call_completed"] {
        assert_eq!(kinds(kind), 5, "{kind}");
    }
    let received = records.iter().find(|r| r["kind"] == "call_received").expect("call_received");
    assert_eq!(received["args"]["text"], "[redacted]", "{received}");
    assert!(received["args_hmac"].is_string() && received.get("args_sha256").is_none(), "{received}");
    // Every completed call was received, decided and forwarded before it completed.
    for done in records.iter().filter(|r| r["kind"] == "call_completed") {
        let id = &done["call_id"];
        let seq_of = |kind: &str| records.iter().find(|r| r["kind"] == kind && &r["call_id"] == id).and_then(|r| r["seq"].as_u64()).expect("seq");
        assert!(seq_of("call_received") < seq_of("decision"));
        assert!(seq_of("decision") < seq_of("call_forwarded"));
        assert!(seq_of("call_forwarded") < seq_of("call_completed"));
    }
    let database = std::fs::read_dir(setup.data_dir().join("audit")).expect("audit dir");
    for file in database.filter_map(Result::ok) {
        let bytes = std::fs::read(file.path()).unwrap_or_default();
        assert!(!bytes.windows(8).any(|w| w == b"secret-0"), "a redacted value reached {}", file.path().display());
    }
}
