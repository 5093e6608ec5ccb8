//! `resources/read`, `resources/subscribe` and `prompts/get` through the real binary: each is
//! decided and logged like a tool call, and a read reaches only the server that lists it.
//! The downstreams are `airlock demo-tools` behind `tee`, so every byte a server was sent
//! is on disk to check.

// resources/subscribe is legacy-only (SEP-2577); Airlock still serves it to those clients.
#![allow(deprecated)]

use std::path::PathBuf;

use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams, SubscribeRequestParams};
use serde_json::{Value, json};

use crate::util::{Setup, TestClient, airlock, call, export};

/// Adds a demo downstream `name` whose stdin is copied to the returned file.
fn recorded_demo(setup: &Setup, name: &str, extra: &str) -> PathBuf {
    let sandbox = setup.sandbox(name);
    let wire = setup.path().join(format!("{name}.wire"));
    let script = format!(
        "tee -a '{wire}' | exec '{bin}' demo-tools --sandbox '{sandbox}'",
        wire = wire.display(),
        bin = airlock(),
        sandbox = sandbox.display(),
    );
    setup.manifest(name, &format!("name = \"{name}\"\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\n{extra}"));
    wire
}

fn wire(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn read(uri: &str) -> ReadResourceRequestParams {
    ReadResourceRequestParams::new(uri)
}

/// The records of `kind` whose `detail.method` is `method`.
fn records<'a>(log: &'a [Value], kind: &str, method: &str) -> Vec<&'a Value> {
    log.iter().filter(|r| r["kind"] == kind && r["detail"]["method"] == method).collect()
}

fn setup_without_servers() -> Setup {
    Setup::new("[gateway]\ndata_dir = \"data\"\n")
}

#[tokio::test]
async fn a_high_risk_resource_is_refused_for_approval_and_logged() {
    let setup = setup_without_servers();
    let wire_path = recorded_demo(&setup, "demo", "[resources.\"demo://customers*\"]\nrisk = \"high\"\n");
    let client = setup.stdio(TestClient::new()).await;
    let refused = client.read_resource(read("demo://customers")).await.expect_err("a high read is held, not run");
    let text = refused.to_string();
    assert!(text.contains("needs approval") && text.contains("not forwarded"), "{text}");
    assert!(!wire(&wire_path).contains("resources/read"), "the server was asked: {}", wire(&wire_path));
    client.cancel().await.expect("close");

    let log = export(&setup.data_dir());
    let decision = records(&log, "decision", "resources/read");
    assert_eq!(decision.len(), 1, "{log:#?}");
    assert_eq!(decision[0]["decision"], "approve");
    assert_eq!(decision[0]["risk"], "high");
    let received = records(&log, "call_received", "resources/read");
    assert_eq!(received[0]["args"]["uri"], "demo://customers");
    assert_eq!(received[0]["call_id"], decision[0]["call_id"]);
    assert!(records(&log, "call_completed", "resources/read").is_empty(), "nothing ran");
}

#[tokio::test]
async fn a_default_low_read_is_allowed_and_logged_with_its_decision() {
    let setup = setup_without_servers();
    let wire_path = recorded_demo(&setup, "demo", "");
    let client = setup.stdio(TestClient::new()).await;
    let got = client.read_resource(read("demo://customers")).await.expect("a low read runs");
    assert!(serde_json::to_string(&got).expect("json").contains("C-1001"));
    assert!(wire(&wire_path).contains("resources/read"));
    client.subscribe(SubscribeRequestParams::new("demo://logs/api.log")).await.ok();
    client.cancel().await.expect("close");

    let log = export(&setup.data_dir());
    let decision = records(&log, "decision", "resources/read");
    assert_eq!(decision.len(), 1, "{log:#?}");
    assert_eq!(decision[0]["decision"], "allow");
    assert_eq!(decision[0]["risk"], "low");
    assert!(decision[0]["reason"].as_str().is_some_and(|r| r.contains("low-risk resources are allowed")), "{decision:?}");
    let call_id = &decision[0]["call_id"];
    let kinds: Vec<&Value> = log.iter().filter(|r| &r["call_id"] == call_id).map(|r| &r["kind"]).collect();
    assert_eq!(kinds, ["call_received", "decision", "call_forwarded", "call_completed"], "{log:#?}");
    let completed = records(&log, "call_completed", "resources/read");
    assert!(completed[0]["result_sha256"].is_string() && completed[0]["is_error"] == false);
    assert_eq!(completed[0]["detail"]["server"], "demo");
    let subscribed = records(&log, "decision", "resources/subscribe");
    assert_eq!(subscribed.len(), 1, "a subscription is decided too: {log:#?}");
}

#[tokio::test]
async fn a_deny_rule_on_a_resource_glob_refuses_and_a_tools_rule_does_not_touch_reads() {
    let setup = setup_without_servers();
    let wire_path = recorded_demo(&setup, "demo", "");
    setup.policy(
        "reads",
        "[[rule]]\nid = \"no-tools\"\ntools = [\"*\"]\neffect = \"deny\"\n\n\
         [[rule]]\nid = \"no-pii\"\nresources = [\"demo://cust*\"]\neffect = \"deny\"\nreason = \"customer records are PII\"\n",
    );
    let client = setup.stdio(TestClient::new()).await;
    let refused = client.read_resource(read("demo://customers")).await.expect_err("denied");
    let text = refused.to_string();
    assert!(text.contains("no-pii") && text.contains("customer records are PII"), "{text}");
    client.read_resource(read("demo://logs/api.log")).await.expect("a tools-only rule never matches a read");
    let tool = client.call_tool(call("demo__echo", json!({"text": "hi"}))).await.expect("answered");
    assert!(crate::util::text_of(&tool).contains("Denied by rule `no-tools`"), "the tools rule still applies to tools: {tool:?}");
    client.cancel().await.expect("close");

    assert_eq!(wire(&wire_path).matches("resources/read").count(), 1, "only the allowed read reached the server");
    let log = export(&setup.data_dir());
    let decisions: Vec<(&Value, &Value)> =
        records(&log, "decision", "resources/read").iter().map(|r| (&r["decision"], &r["rule"])).collect();
    assert_eq!(decisions, [(&json!("deny"), &json!("no-pii")), (&json!("allow"), &Value::Null)]);
}

#[tokio::test]
async fn a_prompt_get_is_decided_by_its_arguments_and_logged() {
    let setup = setup_without_servers();
    recorded_demo(&setup, "demo", "[prompts.incident_summary]\nrisk = \"medium\"\n");
    setup.policy(
        "prompts",
        "[[rule]]\nid = \"billing-prompt\"\nprompts = [\"demo__incident_*\"]\nwhen = { \"/service\" = { equals = \"billing\" } }\n\
         effect = \"deny\"\nreason = \"billing logs stay private\"\n\n\
         [[rule]]\nid = \"prompts-ok\"\nprompts = [\"demo__*\"]\neffect = \"allow\"\n",
    );
    let client = setup.stdio(TestClient::new()).await;
    let get = |service: &str| {
        let mut get = GetPromptRequestParams::new("demo__incident_summary");
        let Value::Object(args) = json!({"service": service}) else { unreachable!() };
        get.arguments = Some(args);
        get
    };
    let refused = client.get_prompt(get("billing")).await.expect_err("denied by its arguments");
    assert!(refused.to_string().contains("billing logs stay private"), "{refused}");
    let allowed = client.get_prompt(get("api")).await.expect("allowed");
    assert!(serde_json::to_string(&allowed).expect("json").contains("api"));
    client.cancel().await.expect("close");

    let log = export(&setup.data_dir());
    let decisions = records(&log, "decision", "prompts/get");
    let seen: Vec<(&Value, &Value, &Value)> = decisions.iter().map(|r| (&r["decision"], &r["rule"], &r["risk"])).collect();
    assert_eq!(
        seen,
        [(&json!("deny"), &json!("billing-prompt"), &json!("medium")), (&json!("allow"), &json!("prompts-ok"), &json!("medium"))]
    );
    assert!(decisions.iter().all(|r| r["tool"] == "demo__incident_summary"));
    let received = records(&log, "call_received", "prompts/get");
    assert_eq!(received[0]["args"], json!({"service": "billing"}));
    assert_eq!(records(&log, "call_completed", "prompts/get").len(), 1);
}

#[tokio::test]
async fn a_hidden_prompt_and_resource_read_as_unknown() {
    let setup = setup_without_servers();
    let wire_path = recorded_demo(
        &setup,
        "demo",
        "[prompts.incident_summary]\nhidden = true\n[resources.\"demo://customers\"]\nhidden = true\n",
    );
    let client = setup.stdio(TestClient::new()).await;
    assert!(client.list_all_prompts().await.expect("list").is_empty());
    let resources = client.list_all_resources().await.expect("list");
    assert!(!resources.is_empty() && resources.iter().all(|r| r.uri != "demo://customers"), "{resources:?}");
    let prompt = client.get_prompt(GetPromptRequestParams::new("demo__incident_summary")).await.expect_err("hidden");
    assert!(prompt.to_string().contains("unknown prompt"), "{prompt}");
    let read = client.read_resource(read("demo://customers")).await.expect_err("hidden");
    assert!(read.to_string().contains("unknown resource"), "{read}");
    client.cancel().await.expect("close");
    let sent = wire(&wire_path);
    assert!(!sent.contains("resources/read") && !sent.contains("prompts/get"), "{sent}");
}

#[tokio::test]
async fn a_read_goes_only_to_the_server_that_lists_it_and_an_unknown_uri_to_none() {
    let setup = setup_without_servers();
    let owner = recorded_demo(&setup, "demo", "");
    // The second server offers the same demo data, but its manifest hides every demo:// URI.
    let other = recorded_demo(&setup, "other", "[resources.\"demo://*\"]\nhidden = true\n");
    let client = setup.stdio(TestClient::new()).await;
    client.read_resource(read("demo://customers")).await.expect("read from its owner");
    let unknown = client.read_resource(read("demo://nothing?token=SECRET-123")).await.expect_err("nobody lists it");
    assert!(unknown.to_string().contains("unknown resource"), "{unknown}");
    let unsubscribe = client.unsubscribe(rmcp::model::UnsubscribeRequestParams::new("demo://nothing?token=SECRET-123")).await;
    assert!(unsubscribe.is_err());
    client.cancel().await.expect("close");

    assert_eq!(wire(&owner).matches("resources/read").count(), 1, "{}", wire(&owner));
    assert!(!wire(&other).contains("resources/read"), "the other server was asked: {}", wire(&other));
    for sent in [wire(&owner), wire(&other)] {
        assert!(!sent.contains("SECRET-123"), "the token reached a server: {sent}");
    }
    let log = export(&setup.data_dir());
    let exported = serde_json::to_string(&log).expect("json");
    assert!(!exported.contains("SECRET-123"), "the token reached the log");
    let refused = records(&log, "decision", "resources/read");
    assert_eq!(refused[1]["decision"], "unknown_resource");
    let received = records(&log, "call_received", "resources/read");
    assert_eq!(received[1]["args"]["uri"], "demo://nothing?token=[redacted]");
}

#[tokio::test]
async fn a_uri_two_servers_list_is_refused_and_sent_to_neither() {
    let setup = setup_without_servers();
    let first = recorded_demo(&setup, "demo", "");
    let second = recorded_demo(&setup, "demo2", "");
    let client = setup.stdio(TestClient::new()).await;
    let refused = client.read_resource(read("demo://customers")).await.expect_err("ambiguous");
    assert!(refused.to_string().contains("several servers"), "{refused}");
    client.cancel().await.expect("close");
    for sent in [wire(&first), wire(&second)] {
        assert!(!sent.contains("resources/read"), "{sent}");
    }
}

#[test]
fn check_reports_bad_resource_and_prompt_entries_with_lines() {
    let setup = setup_without_servers();
    setup.manifest(
        "demo",
        "command = \"airlock\"\nargs = [\"demo-tools\"]\n\n[resources.\"demo://[x\"]\nrisk = \"high\"\n\n[prompts.summary]\nrisks = \"low\"\n\n[prompts.empty]\n",
    );
    setup.policy("bad", "[[rule]]\nid = \"r\"\nresources = []\neffect = \"deny\"\n\n[[rule]]\nid = \"p\"\nprompts = [\"a[\"]\neffect = \"deny\"\n");
    let out = std::process::Command::new(airlock()).arg("check").arg("--config").arg(setup.config()).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for expected in [
        "tool-manifests/demo.toml:4: key \"resources\": \"demo://[x\" is not a valid glob",
        "tool-manifests/demo.toml:8: key \"risks\" is not known",
        "policies/bad.toml:3: rule \"r\": key \"resources\" is empty",
        "policies/bad.toml:8: rule \"p\": key \"prompts\": \"a[\" is not a valid glob",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(stdout.contains("tool-manifests/demo.toml:10: [prompts.empty] gives neither"), "{stdout}");
}

#[test]
fn explain_shows_the_decision_for_a_resource_and_a_prompt() {
    let setup = setup_without_servers();
    setup.demo("demo");
    std::fs::write(
        setup.path().join("tool-manifests/demo.toml"),
        format!(
            "{}\n[resources.\"demo://customers\"]\nrisk = \"high\"\n[prompts.incident_summary]\nrisk = \"medium\"\n",
            std::fs::read_to_string(setup.path().join("tool-manifests/demo.toml")).expect("read")
        ),
    )
    .expect("write");
    let explain = |args: &[&str]| {
        let out = std::process::Command::new(airlock()).arg("explain").arg("--config").arg(setup.config()).args(args).output().expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let resource = explain(&["--resource", "demo://customers"]);
    assert!(resource.contains("resource: demo://customers") && resource.contains("risk: high"), "{resource}");
    assert!(resource.contains("decision: approve") && resource.contains("served by \"demo\""), "{resource}");
    let unlisted = explain(&["--resource", "demo://nothing"]);
    assert!(unlisted.contains("unknown resource"), "{unlisted}");
    let prompt = explain(&["--prompt", "demo__incident_summary", "--args", "{\"service\":\"api\"}"]);
    assert!(prompt.contains("prompt: demo__incident_summary") && prompt.contains("decision: confirm"), "{prompt}");
}

#[test]
fn rules_select_tools_resources_and_prompts_by_their_own_keys() {
    use airlock::policy::{CallFacts, Effect, PolicySet, Subject};
    use airlock::risk::Risk;
    let set = PolicySet::parse(
        "[[rule]]\nid = \"t\"\ntools = [\"*\"]\neffect = \"deny\"\n\n\
         [[rule]]\nid = \"high\"\nrisk = [\"high\"]\neffect = \"deny\"\n\n\
         [[rule]]\nid = \"r\"\nresources = [\"demo://*\"]\nprompts = [\"demo__*\"]\neffect = \"confirm\"\n",
        std::path::Path::new("p.toml"),
    )
    .expect("parse");
    let args = json!({});
    let decide = |subject, name: &str, risk| {
        let facts = CallFacts { subject, tool: name, risk, args: &args, principal: "p", groups: &[] };
        let d = set.decide(&facts);
        (d.effect, d.winning_rule.map(|r| r.to_string()))
    };
    assert_eq!(decide(Subject::Tool, "demo__x", Risk::Low), (Effect::Deny, Some("t".into())));
    assert_eq!(decide(Subject::Resource, "demo://x", Risk::Low), (Effect::Confirm, Some("r".into())));
    assert_eq!(decide(Subject::Prompt, "demo__p", Risk::Low), (Effect::Confirm, Some("r".into())));
    assert_eq!(decide(Subject::Resource, "other://x", Risk::Low), (Effect::Allow, None), "no rule: low reads are allowed");
    assert_eq!(decide(Subject::Resource, "other://x", Risk::High), (Effect::Deny, Some("high".into())), "a risk-only rule applies to reads");
}

/// The URIs of the `notifications/resources/updated` a client received.
fn updates(wire: &crate::util::Wire) -> Vec<String> {
    wire.lock()
        .expect("wire")
        .iter()
        .filter(|m| m["method"] == "notifications/resources/updated")
        .filter_map(|m| m["params"]["uri"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_resource_update_reaches_only_the_sessions_subscribed_to_it() {
    let setup = Setup::with_demo();
    let mut gateway = setup.http().await;
    let (watcher, bystander) = (TestClient::new(), TestClient::new());
    let (watcher_wire, bystander_wire) = (watcher.wire.clone(), bystander.wire.clone());
    let a = gateway.client(watcher).await;
    let b = gateway.client(bystander).await;
    a.subscribe(SubscribeRequestParams::new("demo://logs/api.log")).await.expect("subscribe api");
    b.subscribe(SubscribeRequestParams::new("demo://logs/auth.log")).await.expect("subscribe auth");
    b.call_tool(call("demo__restart_service", json!({"service": "api"}))).await.expect("restart api");
    b.call_tool(call("demo__restart_service", json!({"service": "auth"}))).await.expect("restart auth");
    // Updates are relayed in order over each session's one stream: once B has auth's, it
    // would already have api's had it been sent to B.
    let limit = std::time::Duration::from_secs(20);
    assert!(crate::util::eventually(limit, || updates(&bystander_wire).contains(&"demo://logs/auth.log".to_owned())).await);
    assert!(crate::util::eventually(limit, || !updates(&watcher_wire).is_empty()).await);
    assert_eq!(updates(&bystander_wire), ["demo://logs/auth.log"], "B learnt of a URI it never subscribed to");
    assert_eq!(updates(&watcher_wire), ["demo://logs/api.log"]);
    a.cancel().await.expect("close");
    b.cancel().await.expect("close");
    gateway.child.start_kill().expect("kill");
    let _ = gateway.child.wait().await;
}
