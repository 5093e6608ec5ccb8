//! Live reload through the real binary: SIGHUP re-reads the policies and manifests of a
//! running gateway; a broken file changes nothing; held calls survive and are re-decided;
//! the log names the policy version of every decision.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::CallToolResult;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::util::{HttpGateway, Recorder, Setup, TestClient, airlock, airlock_log, call, eventually, export, text_of};

/// Hang guard for waits on the gateway (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

/// `(name, token, group)`: carol calls tools, bob approves.
const PEOPLE: [(&str, &str, &str); 2] = [("carol", "tok-carol-0123456789", "dev"), ("bob", "tok-bob-0123456789", "sre")];

fn token(name: &str) -> &'static str {
    PEOPLE.iter().find(|p| p.0 == name).map(|p| p.1).expect("known person")
}

const DELETES_NEED_AN_SRE: &str = r#"
[[rule]]
id = "deletes-need-an-sre"
tools = ["demo__delete_bucket"]
effect = "approve"
approvers = ["group:sre"]
quorum = 1
reason = "deletes need an SRE"
"#;

const ECHO_ALLOWED: &str = "[[rule]]\nid = \"echo\"\ntools = [\"demo__echo\"]\neffect = \"allow\"\nreason = \"harmless\"\n";
const ECHO_DENIED: &str = "[[rule]]\nid = \"echo\"\ntools = [\"demo__echo\"]\neffect = \"deny\"\nreason = \"echo is off now\"\n";

/// A demo downstream, `holds.toml` (deletes need an SRE), `echo.toml`, and the tokens.
fn setup() -> Setup {
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n\n[approvals]\ntimeout = \"10m\"\n");
    for (name, token, group) in PEOPLE {
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
        config.push_str(&format!("\n[[identity.tokens]]\nname = \"{name}\"\nsha256 = \"{digest}\"\ngroups = [\"{group}\"]\n"));
    }
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy("holds", DELETES_NEED_AN_SRE);
    setup.policy("echo", ECHO_ALLOWED);
    setup
}

async fn mcp_as(gateway: &HttpGateway, name: &str) -> RunningService<RoleClient, TestClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token(name));
    TestClient::new().serve(StreamableHttpClientTransport::from_config(config)).await.expect("initialize over HTTP")
}

/// Sends SIGHUP to `pid` and waits for the gateway's stderr to say how the reload went
/// (the `n`-th such line); returns that line and what followed it.
pub(crate) async fn hup(pid: u32, stderr: &Arc<Mutex<Vec<String>>>, n: usize) -> String {
    let sent = std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status().expect("run kill");
    assert!(sent.success(), "kill -HUP {pid}");
    let outcomes = || {
        let lines = stderr.lock().expect("stderr lines").clone();
        let at: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.starts_with("airlock: reload")).map(|(i, _)| i).collect();
        at.get(n - 1).map(|&i| lines[i..].join("\n"))
    };
    assert!(eventually(PATIENCE, || outcomes().is_some()).await, "no reload outcome on stderr: {:?}", stderr.lock().expect("lines"));
    outcomes().unwrap_or_default()
}

async fn api(gateway: &HttpGateway, path: &str, body: Option<Value>) -> Value {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", gateway.url);
    let request = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    let response = request.bearer_auth(token("bob")).send().await.expect("reach the gateway");
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.expect("json body")
}

/// Waits for a pending approval of `tool` and returns its id.
async fn pending(gateway: &HttpGateway, tool: &str) -> String {
    for _ in 0..600 {
        let body = api(gateway, "/api/v1/approvals?state=pending", None).await;
        if let Some(found) = body["approvals"].as_array().and_then(|all| all.iter().find(|a| a["tool"] == tool)) {
            return found["id"].as_str().expect("id").to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no pending approval for {tool}");
}

fn in_background(client: &RunningService<RoleClient, TestClient>, tool: &str, args: Value) -> tokio::task::JoinHandle<CallToolResult> {
    let peer = client.peer().clone();
    let params = call(tool, args);
    tokio::spawn(async move { peer.call_tool(params).await.expect("the held call answers") })
}

async fn stop(mut gateway: HttpGateway) {
    let _ = gateway.child.kill().await;
    let _ = gateway.child.wait().await;
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

fn verify_passes(setup: &Setup) {
    let out = airlock_log(&setup.data_dir(), &["verify"]);
    assert!(out.status.success(), "log verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_policy_edit_and_sighup_change_the_next_decision_and_a_held_call_stays_held() {
    let setup = setup();
    let gateway = setup.http().await;
    let pid = gateway.child.id().expect("pid");
    let carol = mcp_as(&gateway, "carol").await;
    let before = carol.call_tool(call("demo__echo", json!({"text": "one"}))).await.expect("echo");
    assert_ne!(before.is_error, Some(true), "{}", text_of(&before));
    let held = in_background(&carol, "demo__delete_bucket", json!({"bucket": "tmp-a"}));
    let id = pending(&gateway, "demo__delete_bucket").await;

    setup.policy("echo", ECHO_DENIED);
    let outcome = hup(pid, &gateway.stderr, 1).await;
    assert!(outcome.starts_with("airlock: reloaded"), "{outcome}");
    assert!(outcome.contains("\"what\":\"policies\""), "{outcome}");
    let after = carol.call_tool(call("demo__echo", json!({"text": "two"}))).await.expect("echo");
    assert_eq!(after.is_error, Some(true), "the new set decides the next call: {}", text_of(&after));
    assert!(text_of(&after).contains("echo is off now"), "{}", text_of(&after));

    // The hold is still open, and still settles the usual way.
    assert_eq!(pending(&gateway, "demo__delete_bucket").await, id);
    assert!(!held.is_finished(), "the held call ended on reload");
    api(&gateway, &format!("/api/v1/approvals/{id}/decision"), Some(json!({"decision": "approve"}))).await;
    let released = tokio::time::timeout(PATIENCE, held).await.expect("released").expect("join");
    assert!(!text_of(&released).contains("not forwarded"), "the approved call ran: {}", text_of(&released));
    carol.cancel().await.expect("close");
    stop(gateway).await;

    let records = export(&setup.data_dir());
    // The start's two records are one group: one sync, one checkpoint covering both.
    let kinds: Vec<&str> = records.iter().take(4).filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds, ["export", "gateway_started", "config_loaded", "checkpoint"], "{:?}", &records[..4]);
    assert_eq!(records[3]["size"], 2, "{}", records[3]);
    let loaded = of_kind(&records, "config_loaded");
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert_eq!(loaded[0]["detail"]["reason"], "start");
    assert_eq!(loaded[1]["detail"]["reason"], "reload");
    let (first, second) = (&loaded[0]["detail"]["policy_sha256"], &loaded[1]["detail"]["policy_sha256"]);
    assert_ne!(first, second);
    assert_eq!(&loaded[1]["policy_sha256"], second);
    assert!(loaded[1]["detail"]["policies"]["echo.toml"].is_string(), "{}", loaded[1]);
    assert!(loaded[1]["detail"]["manifests"]["demo"].is_string(), "{}", loaded[1]);
    let decisions = of_kind(&records, "decision");
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(&decisions[0]["policy_sha256"], first, "echo before the reload");
    assert_eq!(&decisions[1]["policy_sha256"], first, "the held delete, opened before the reload");
    assert_eq!(&decisions[2]["policy_sha256"], second, "echo after the reload");
    assert_eq!(decisions[2]["decision"], "deny");
    assert_eq!(of_kind(&records, "call_forwarded").len(), 2, "echo, then the approved delete");
    verify_passes(&setup);
}

#[tokio::test]
async fn a_broken_policy_file_keeps_the_running_set_and_names_file_and_line() {
    let setup = setup();
    let gateway = setup.http().await;
    let pid = gateway.child.id().expect("pid");
    let carol = mcp_as(&gateway, "carol").await;

    setup.policy("echo", &ECHO_DENIED.replace("\"deny\"", "\"maybe\""));
    let outcome = hup(pid, &gateway.stderr, 1).await;
    assert!(outcome.starts_with("airlock: reload refused"), "{outcome}");
    // The same problem text `airlock check` prints.
    let check = std::process::Command::new(airlock()).arg("check").arg("--config").arg(setup.config()).output().expect("run check");
    let problem = String::from_utf8_lossy(&check.stdout).lines().next().unwrap_or_default().to_owned();
    assert!(problem.contains("echo.toml:4:"), "check names file and line: {problem}");
    assert!(outcome.contains(&problem), "reload printed {outcome:?}, check {problem:?}");

    let still = carol.call_tool(call("demo__echo", json!({"text": "still"}))).await.expect("echo");
    assert_ne!(still.is_error, Some(true), "the old set still decides: {}", text_of(&still));
    carol.cancel().await.expect("close");
    stop(gateway).await;

    let records = export(&setup.data_dir());
    assert_eq!(of_kind(&records, "config_loaded").len(), 1, "a refused reload loads nothing");
    let rejected = of_kind(&records, "config_rejected");
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0]["detail"]["problems"][0].as_str().is_some_and(|p| p == problem), "{}", rejected[0]);
    let start = &of_kind(&records, "config_loaded")[0]["policy_sha256"];
    assert_eq!(&of_kind(&records, "decision")[0]["policy_sha256"], start);
    verify_passes(&setup);
}

#[tokio::test]
async fn a_pending_approval_is_re_decided_to_cancelled_when_a_reload_denies_the_tool() {
    let setup = setup();
    let gateway = setup.http().await;
    let pid = gateway.child.id().expect("pid");
    let carol = mcp_as(&gateway, "carol").await;
    let held = in_background(&carol, "demo__delete_bucket", json!({"bucket": "tmp-b"}));
    let id = pending(&gateway, "demo__delete_bucket").await;

    setup.policy("holds", "[[rule]]\nid = \"no-deletes\"\ntools = [\"demo__delete_bucket\"]\neffect = \"deny\"\nreason = \"no deletes this week\"\n");
    let outcome = hup(pid, &gateway.stderr, 1).await;
    assert!(outcome.starts_with("airlock: reloaded"), "{outcome}");
    let answer = tokio::time::timeout(PATIENCE, held).await.expect("the hold ended").expect("join");
    assert_eq!(answer.is_error, Some(true));
    let text = text_of(&answer);
    assert!(text.contains("cancelled") && text.contains("policy changed") && text.contains("no deletes this week"), "{text}");
    let shown = api(&gateway, &format!("/api/v1/approvals/{id}"), None).await;
    assert_eq!(shown["state"], "cancelled", "{shown}");
    carol.cancel().await.expect("close");
    stop(gateway).await;

    let records = export(&setup.data_dir());
    let settled = of_kind(&records, "approval_settled");
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0]["decision"], "cancelled");
    assert!(settled[0]["reason"].as_str().is_some_and(|r| r.contains("policy changed")), "{}", settled[0]);
    assert!(of_kind(&records, "call_forwarded").is_empty(), "the denied call ran");
    verify_passes(&setup);
}

#[tokio::test]
async fn a_stricter_quorum_applies_to_a_pending_approval() {
    let setup = setup();
    let gateway = setup.http().await;
    let pid = gateway.child.id().expect("pid");
    let carol = mcp_as(&gateway, "carol").await;
    let held = in_background(&carol, "demo__delete_bucket", json!({"bucket": "tmp-c"}));
    let id = pending(&gateway, "demo__delete_bucket").await;
    setup.policy("holds", &DELETES_NEED_AN_SRE.replace("quorum = 1", "quorum = 2"));
    let outcome = hup(pid, &gateway.stderr, 1).await;
    assert!(outcome.starts_with("airlock: reloaded"), "{outcome}");
    let shown = api(&gateway, &format!("/api/v1/approvals/{id}"), None).await;
    assert_eq!(shown["quorum"], 2, "{shown}");
    // One approval no longer releases it.
    api(&gateway, &format!("/api/v1/approvals/{id}/decision"), Some(json!({"decision": "approve"}))).await;
    let shown = api(&gateway, &format!("/api/v1/approvals/{id}"), None).await;
    assert_eq!(shown["state"], "pending", "{shown}");
    assert!(!held.is_finished());
    held.abort();
    carol.cancel().await.expect("close");
    stop(gateway).await;
    let records = export(&setup.data_dir());
    let changed = of_kind(&records, "approval_changed");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["detail"]["quorum"], 2);
    assert_eq!(changed[0]["detail"]["before"]["quorum"], 1);
    verify_passes(&setup);
}

/// The `airlock demo-tools` children of `parent` serving the sandbox of demo server `name`.
fn children_serving(parent: u32, name: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else { return pids };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
            if !zombie && cmdline.contains("demo-tools") && cmdline.contains(&format!("sandbox-{name}\0")) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[tokio::test]
async fn a_reload_starts_added_stops_removed_restarts_changed_and_keeps_unchanged_downstreams() {
    let setup = Setup::with_demo();
    setup.demo("keep");
    setup.demo("swap");
    let mut cmd = tokio::process::Command::new(airlock());
    // In-process (no bridge), so SIGHUP and the downstreams' parent are this pid.
    cmd.arg("serve").arg("--standalone").arg("--config").arg(setup.config()).env("AIRLOCK_LOG", "warn");
    let (child, stderr) = TokioChildProcess::builder(cmd).stderr(Stdio::piped()).spawn().expect("spawn airlock");
    let pid = child.id().expect("pid");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    let mut stderr = tokio::io::BufReader::new(stderr.expect("stderr")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            eprintln!("[airlock] {line}");
            kept.lock().expect("lines").push(line);
        }
    });
    let client = TestClient::new();
    let transport = Recorder::new(IntoTransport::<RoleClient, _, _>::into_transport(child), client.wire.clone());
    let running = client.clone().serve(transport).await.expect("initialize through airlock");
    let names = |tools: &rmcp::model::ListToolsResult| tools.tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>();
    let tools = names(&running.list_tools(None).await.expect("list"));
    assert!(tools.iter().any(|t| t == "keep__echo") && tools.iter().any(|t| t == "demo__echo"), "{tools:?}");
    assert!(eventually(PATIENCE, || children_serving(pid, "keep").len() == 1).await);
    let keep_pid = children_serving(pid, "keep");
    assert_eq!(children_serving(pid, "demo").len(), 1);
    let swap_pid = children_serving(pid, "swap");
    assert_eq!(swap_pid.len(), 1);

    std::fs::remove_file(setup.path().join("tool-manifests/demo.toml")).expect("remove demo");
    setup.demo("extra");
    let swap = setup.path().join("tool-manifests/swap.toml");
    let changed = format!("{}default_risk = \"low\"\n", std::fs::read_to_string(&swap).expect("read swap"));
    std::fs::write(&swap, changed).expect("change swap");
    let outcome = hup(pid, &lines, 1).await;
    assert!(outcome.starts_with("airlock: reloaded"), "{outcome}");
    assert!(outcome.contains("{\"what\":\"server_added\",\"server\":\"extra\"}"), "{outcome}");
    assert!(outcome.contains("{\"what\":\"server_removed\",\"server\":\"demo\"}"), "{outcome}");
    assert!(outcome.contains("{\"what\":\"server_restarted\",\"server\":\"swap\"}"), "{outcome}");
    assert!(!outcome.contains("\"server\":\"keep\""), "{outcome}");
    tokio::time::timeout(PATIENCE, client.list_changed.notified()).await.expect("tools/list_changed after the reload");
    let tools = names(&running.list_tools(None).await.expect("list"));
    assert!(tools.iter().any(|t| t == "extra__echo"), "the added server's tools appear: {tools:?}");
    assert!(!tools.iter().any(|t| t.starts_with("demo__")), "the removed server's tools are gone: {tools:?}");
    assert!(tools.iter().any(|t| t == "keep__echo"), "{tools:?}");
    let echoed = running.call_tool(call("extra__echo", json!({"text": "hi"}))).await.expect("call extra");
    assert_ne!(echoed.is_error, Some(true), "{}", text_of(&echoed));
    assert_eq!(children_serving(pid, "keep"), keep_pid, "the unchanged server kept its process");
    assert!(
        eventually(PATIENCE, || { let now = children_serving(pid, "swap"); now.len() == 1 && now != swap_pid }).await,
        "the changed server runs in a new process: {swap_pid:?} → {:?}", children_serving(pid, "swap")
    );
    assert!(eventually(PATIENCE, || children_serving(pid, "demo").is_empty()).await, "the removed server's process stopped");
    running.cancel().await.expect("close");

    let records = export(&setup.data_dir());
    let loaded = of_kind(&records, "config_loaded");
    assert_eq!(loaded.len(), 2);
    let manifests = loaded[1]["detail"]["manifests"].as_object().expect("manifests").keys().cloned().collect::<Vec<_>>();
    assert_eq!(manifests, vec!["extra", "keep", "swap"]);
    assert_ne!(loaded[0]["detail"]["manifests"]["swap"], loaded[1]["detail"]["manifests"]["swap"]);
    assert_eq!(loaded[0]["detail"]["manifests"]["keep"], loaded[1]["detail"]["manifests"]["keep"]);
    verify_passes(&setup);
}
