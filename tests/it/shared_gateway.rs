//! One gateway per data dir: `airlock serve` (stdio) launches attach to the data dir's
//! gateway over `<data_dir>/airlock.sock` (starting one when none runs), share its log and
//! approval queue, survive its death, and the socket admits only whom it should.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{RawStdio, Setup, TestClient, airlock, airlock_log, call, export, text_of};

/// `airlock gateway status --json` of the setup's gateway.
fn status(setup: &Setup) -> Value {
    let out = gateway(setup, &["status", "--json"]);
    assert!(out.status.success(), "gateway status: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn gateway(setup: &Setup, args: &[&str]) -> Output {
    Command::new(airlock()).arg("gateway").args(args).arg("--config").arg(setup.config()).output().expect("run airlock gateway")
}

/// Echo runs, role grants are held for an approver.
const POLICY: &str = r#"
[[rule]]
id = "echo"
tools = ["demo__echo"]
effect = "allow"
reason = "harmless"

[[rule]]
id = "grants"
tools = ["demo__grant_role"]
effect = "approve"
approvers = ["group:sre"]
reason = "role grants need an SRE"
"#;

const BOB: &str = "tok-bob-0123456789";

fn holding_setup() -> Setup {
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, BOB.as_bytes()));
    let setup = Setup::new(&format!(
        "[gateway]\ndata_dir = \"data\"\n\n[approvals]\ntimeout = \"10m\"\n\n[[identity.tokens]]\nname = \"bob\"\nsha256 = \"{digest}\"\ngroups = [\"sre\"]\n"
    ));
    setup.demo("demo");
    setup.policy("p", POLICY);
    setup
}

/// Polls the status until `held_calls` is `n` (a hang guard, not a timing assertion).
async fn wait_held(setup: &Setup, n: u64) {
    for _ in 0..600 {
        if status(setup)["held_calls"].as_u64() == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never {n} held calls: {}", status(setup));
}

#[tokio::test]
async fn three_stdio_clients_started_at_once_share_one_gateway_and_one_verified_log() {
    let setup = Setup::with_demo();
    let (a, b, c) = tokio::join!(setup.stdio(TestClient::new()), setup.stdio(TestClient::new()), setup.stdio(TestClient::new()));
    let clients = [a, b, c];
    for (i, client) in clients.iter().enumerate() {
        let tools = client.list_all_tools().await.expect("tools/list");
        assert!(tools.iter().any(|t| t.name == "demo__echo"), "client {i} lists no demo__echo");
        let result = client.call_tool(call("demo__echo", json!({"text": format!("client {i}")}))).await.expect("call");
        assert_eq!(text_of(&result), format!("client {i}"));
    }
    let status = status(&setup);
    assert!(status["attached"].as_u64() >= Some(3), "{status}");
    assert_eq!(status["downstreams"][0]["state"], "ready", "{status}");
    for client in clients {
        client.cancel().await.expect("close");
    }
    let records = export(&setup.data_dir());
    let verify = airlock_log(&setup.data_dir(), &["verify"]);
    assert!(verify.status.success(), "log verify: {}", String::from_utf8_lossy(&verify.stderr));
    let count = |kind: &str| records.iter().filter(|r| r["kind"] == kind).count();
    assert_eq!(count("gateway_started"), 1, "three simultaneous launches started one gateway");
    assert_eq!(count("session_opened"), 3);
    let sessions: std::collections::HashSet<&Value> =
        records.iter().filter(|r| r["kind"] == "call_received").map(|r| &r["session"]).collect();
    assert_eq!(sessions.len(), 3, "each client is its own session");
    assert_eq!(count("call_completed"), 3, "every call is in the one log");
}

#[tokio::test]
async fn a_held_call_of_one_client_is_approved_from_a_terminal_while_the_others_run() {
    let setup = holding_setup();
    let http = setup.http().await;
    let (a, b, c) = tokio::join!(setup.stdio(TestClient::new()), setup.stdio(TestClient::new()), setup.stdio(TestClient::new()));
    let held = a.peer().clone();
    let grant = tokio::spawn(async move { held.call_tool(call("demo__grant_role", json!({"user": "eve", "role": "admin"}))).await });
    wait_held(&setup, 1).await;
    for (i, client) in [&b, &c].into_iter().enumerate() {
        let result = client.call_tool(call("demo__echo", json!({"text": format!("other {i}")}))).await.expect("echo while held");
        assert_eq!(text_of(&result), format!("other {i}"));
    }
    let list = reqwest::Client::new()
        .get(format!("{}/api/v1/approvals?state=pending", http.url))
        .bearer_auth(BOB)
        .send()
        .await
        .expect("list")
        .json::<Value>()
        .await
        .expect("JSON");
    let id = list["approvals"][0]["id"].as_str().expect("a pending approval").to_owned();
    let approve = Command::new(airlock())
        .args(["approvals", "approve", &id, "--url", &http.url, "--token-env", "BOB_TOKEN"])
        .env("BOB_TOKEN", BOB)
        .output()
        .expect("approvals approve");
    assert!(approve.status.success(), "approve: {}", String::from_utf8_lossy(&approve.stderr));
    let result = grant.await.expect("join").expect("the held call completes");
    assert!(text_of(&result).contains("granted role"), "{}", text_of(&result));
    for client in [a, b, c] {
        client.cancel().await.expect("close");
    }
}

#[tokio::test]
async fn a_killed_gateway_fails_the_calls_in_flight_and_the_next_calls_start_a_new_one() {
    let setup = holding_setup();
    let (a, b, c) = tokio::join!(setup.stdio(TestClient::new()), setup.stdio(TestClient::new()), setup.stdio(TestClient::new()));
    let clients = [a, b, c];
    for (i, client) in clients.iter().enumerate() {
        let result = client.call_tool(call("demo__echo", json!({"text": format!("before {i}")}))).await.expect("echo");
        assert_eq!(text_of(&result), format!("before {i}"));
    }
    let mut held = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let peer = client.peer().clone();
        let args = json!({"user": format!("eve{i}"), "role": "admin"});
        held.push(tokio::spawn(async move { peer.call_tool(call("demo__grant_role", args)).await }));
    }
    wait_held(&setup, 3).await;
    let first = status(&setup)["pid"].as_u64().expect("pid");
    let killed = Command::new("kill").args(["-KILL", &first.to_string()]).status().expect("kill");
    assert!(killed.success());
    for call in held {
        let error = call.await.expect("join").expect_err("a call in flight when the gateway died fails");
        assert!(error.to_string().contains("stopped before answering"), "{error}");
    }
    for (i, client) in clients.iter().enumerate() {
        let result = client.call_tool(call("demo__echo", json!({"text": format!("after {i}")}))).await.expect("echo after");
        assert_eq!(text_of(&result), format!("after {i}"));
    }
    let second = status(&setup)["pid"].as_u64().expect("pid");
    assert_ne!(first, second, "a new gateway serves the next calls");
    for client in clients {
        client.cancel().await.expect("close");
    }
    let records = export(&setup.data_dir());
    let verify = airlock_log(&setup.data_dir(), &["verify"]);
    assert!(verify.status.success(), "log verify: {}", String::from_utf8_lossy(&verify.stderr));
    let echoes = records.iter().filter(|r| r["kind"] == "call_completed" && r["tool"] == "demo__echo").count();
    assert_eq!(echoes, 6, "every acknowledged call is in the log");
    assert_eq!(records.iter().filter(|r| r["kind"] == "gateway_started").count(), 2);
}

/// What the process `pid`'s descriptors refer to (`pipe:[…]`, `socket:[…]`, paths).
fn open_files(pid: u64) -> Vec<std::path::PathBuf> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd");
    dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok()).collect()
}

#[tokio::test]
async fn the_bridge_hands_its_pipes_to_the_gateway_and_relays_once_that_gateway_is_killed() {
    let setup = Setup::with_demo();
    let mut client = RawStdio::spawn(&setup);
    client.initialize().await;
    let bridge = u64::from(client.child.id().expect("bridge pid"));
    let (stdin, stdout) = (
        std::fs::read_link(format!("/proc/{bridge}/fd/0")).expect("the bridge's stdin"),
        std::fs::read_link(format!("/proc/{bridge}/fd/1")).expect("the bridge's stdout"),
    );
    let first = status(&setup)["pid"].as_u64().expect("pid");
    let held = open_files(first);
    assert!(held.contains(&stdin) && held.contains(&stdout), "the gateway holds the client's own pipes {stdin:?} and {stdout:?}: {held:?}");
    let echo = |id: u64, text: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":text}}}).to_string();
    client.send(&echo(2, "direct")).await;
    assert_eq!(client.answer(2).await["result"]["content"][0]["text"], "direct");

    let killed = Command::new("kill").args(["-KILL", &first.to_string()]).status().expect("kill");
    assert!(killed.success());
    // The bridge takes its pipes back: the next call starts a new gateway, relayed to.
    client.send(&echo(3, "relayed")).await;
    assert_eq!(client.answer(3).await["result"]["content"][0]["text"], "relayed");
    let second = status(&setup)["pid"].as_u64().expect("pid");
    assert_ne!(first, second);
    let held = open_files(second);
    assert!(!held.contains(&stdin), "a gateway after the loss is relayed to, not handed the pipes: {held:?}");
    drop(client.stdin);
    let exit = tokio::time::timeout(Duration::from_secs(10), client.child.wait()).await.expect("the bridge exits with its client").expect("wait");
    assert!(exit.success(), "{exit:?}");
    let verify = airlock_log(&setup.data_dir(), &["verify"]);
    assert!(verify.status.success(), "log verify: {}", String::from_utf8_lossy(&verify.stderr));
}

#[tokio::test]
async fn a_standalone_stdio_server_that_inherited_a_launch_environment_keeps_its_stdout() {
    // A launched gateway's downstreams inherit its environment; one of them may be a
    // standalone `airlock serve`, whose stdout is its client's protocol: no `ready` there.
    let setup = Setup::with_demo();
    let mut client = RawStdio::spawn_with(&setup, &[("AIRLOCK_STANDALONE", "1"), ("AIRLOCK_LAUNCHED", "1")]);
    let init = client.initialize().await;
    assert!(init["result"]["serverInfo"].is_object(), "{init}");
    let echo = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"still here"}}});
    client.send(&echo.to_string()).await;
    assert_eq!(client.answer(2).await["result"]["content"][0]["text"], "still here");
}

#[tokio::test]
async fn a_handed_off_session_ends_when_its_client_closes_stdin_and_the_bridge_exits() {
    let setup = Setup::with_demo();
    let mut client = RawStdio::spawn(&setup);
    client.initialize().await;
    let gateway = status(&setup)["pid"].as_u64().expect("pid");
    let bridge = u64::from(client.child.id().expect("bridge pid"));
    let stdin = std::fs::read_link(format!("/proc/{bridge}/fd/0")).expect("the bridge's stdin");
    assert!(open_files(gateway).contains(&stdin), "handed off");
    // The launch's pipe on the gateway's stdout, on which it said it listens, is closed.
    let stdout = std::fs::read_link(format!("/proc/{gateway}/fd/1")).expect("the gateway's stdout");
    assert_eq!(stdout, std::path::Path::new("/dev/null"), "the gateway still holds the launch's pipe");
    drop(client.stdin);
    let exit = tokio::time::timeout(Duration::from_secs(10), client.child.wait()).await.expect("the bridge exits").expect("wait");
    assert!(exit.success(), "{exit:?}");
    // The gateway lets go of the pipes (as the session's end closes them) and serves on.
    let mut released = false;
    for _ in 0..200 {
        if !open_files(gateway).contains(&stdin) {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(released, "the gateway still holds the client's stdin: {:?}", open_files(gateway));
    assert_eq!(status(&setup)["pid"].as_u64(), Some(gateway));
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_file_that_is_not_ours_is_left_alone() {
    let setup = Setup::with_demo();
    std::fs::create_dir_all(setup.data_dir()).expect("mkdir");
    // A socket nobody listens on: what a killed gateway leaves behind.
    drop(std::os::unix::net::UnixListener::bind(setup.data_dir().join("airlock.sock")).expect("bind"));
    let client = setup.stdio(TestClient::new()).await;
    let result = client.call_tool(call("demo__echo", json!({"text": "fresh"}))).await.expect("echo");
    assert_eq!(text_of(&result), "fresh");
    client.cancel().await.expect("close");

    let other = Setup::with_demo();
    std::fs::create_dir_all(other.data_dir()).expect("mkdir");
    std::fs::write(other.data_dir().join("airlock.sock"), "not a socket").expect("write");
    let start = gateway(&other, &["start"]);
    assert!(!start.status.success());
    let stderr = String::from_utf8_lossy(&start.stderr);
    assert!(stderr.contains("not a socket") && stderr.contains("not removed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(other.data_dir().join("airlock.sock")).expect("still there"), "not a socket");
}

#[tokio::test]
async fn a_launch_with_another_config_for_the_same_data_dir_is_refused_naming_both() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let other = tempfile::tempdir().expect("tempdir");
    let other_config = other.path().join("airlock.toml");
    std::fs::write(&other_config, format!("[gateway]\ndata_dir = {:?}\n", setup.data_dir().display().to_string())).expect("write");
    let out = Command::new(airlock()).arg("serve").arg("--config").arg(&other_config).stdin(Stdio::null()).output().expect("serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("one data dir has one configuration"), "{stderr}");
    assert!(stderr.contains(&other_config.canonicalize().expect("path").display().to_string()), "{stderr}");
    assert!(stderr.contains(&setup.config().canonicalize().expect("path").display().to_string()), "{stderr}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_gateway_without_clients_exits_after_idle_exit() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\nidle_exit = \"1s\"\n");
    setup.demo("demo");
    let client = setup.stdio(TestClient::new()).await;
    client.list_all_tools().await.expect("tools/list");
    client.cancel().await.expect("close");
    let socket = setup.data_dir().join("airlock.sock");
    for _ in 0..600 {
        if !socket.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway did not exit with no clients");
}

/// A gateway run as `nobody` on a setup owned by it, so this (root) process is a foreign
/// peer. `None` (and SKIPPED) when that cannot be arranged here.
fn foreign_gateway(gateway_keys: &str) -> Option<(Setup, tokio::process::Child)> {
    let root = Command::new("id").arg("-u").output().ok().is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    let nobody = Command::new("id").args(["-u", "nobody"]).output().ok().is_some_and(|o| o.status.success());
    if !(root && setpriv && nobody) {
        eprintln!("SKIPPED a foreign socket peer: needs root, util-linux setpriv and the user nobody");
        return None;
    }
    let setup = Setup::new(&format!("[gateway]\ndata_dir = \"data\"\nidle_exit = \"never\"\n{gateway_keys}"));
    setup.demo("demo");
    let chown = Command::new("chown").args(["-R", "nobody:"]).arg(setup.path()).status().expect("chown");
    assert!(chown.success());
    let child = tokio::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", airlock(), "gateway", "run", "--config"])
        .arg(setup.config())
        .env("AIRLOCK_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the gateway as nobody");
    Some((setup, child))
}

async fn wait_socket(setup: &Setup) {
    for _ in 0..600 {
        if std::os::unix::net::UnixStream::connect(setup.data_dir().join("airlock.sock")).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the foreign gateway never listened");
}

/// Stops the foreign gateway with SIGTERM (this process is no operator of it).
async fn terminate(mut child: tokio::process::Child) {
    let pid = child.id().expect("pid").to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("the gateway exits on SIGTERM");
}

#[tokio::test]
async fn a_peer_uid_that_is_not_admitted_is_refused_and_recorded() {
    let Some((setup, child)) = foreign_gateway("") else { return };
    wait_socket(&setup).await;
    let out = gateway(&setup, &["status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("root (uid 0) may not use this gateway"), "{stderr}");
    let bridged = Command::new(airlock()).arg("serve").arg("--config").arg(setup.config()).stdin(Stdio::null()).output().expect("serve");
    assert!(!bridged.status.success(), "an MCP attach is refused too");
    terminate(child).await;
    let records = export(&setup.data_dir());
    let refused: Vec<&Value> = records.iter().filter(|r| r["kind"] == "control_refused").collect();
    assert!(refused.len() >= 2 && refused.iter().all(|r| r["detail"]["reason"] == "not_admitted" && r["detail"]["uid"] == 0), "{refused:?}");
}

#[tokio::test]
async fn an_admitted_peer_that_is_no_operator_calls_tools_as_unix_name_but_cannot_stop_the_gateway() {
    let Some((setup, child)) = foreign_gateway("socket_clients = [\"user:root\"]\n") else { return };
    wait_socket(&setup).await;
    assert!(status(&setup)["pid"].as_u64().is_some(), "status is for every admitted peer");
    let stop = gateway(&setup, &["stop"]);
    assert!(!stop.status.success());
    let stderr = String::from_utf8_lossy(&stop.stderr);
    assert!(stderr.contains("may not run `stop`"), "{stderr}");
    let client = setup.stdio(TestClient::new()).await;
    let result = client.call_tool(call("demo__echo", json!({"text": "as root"}))).await;
    // No policy: the default for a low-risk tool decides; the principal is what matters.
    drop(result);
    client.cancel().await.expect("close");
    terminate(child).await;
    let records = export(&setup.data_dir());
    assert!(records.iter().any(|r| r["kind"] == "session_opened" && r["principal"] == "unix:root"), "the peer calls as unix:root");
    assert!(records.iter().any(|r| r["kind"] == "control_refused" && r["detail"]["reason"] == "not_operator" && r["detail"]["request"] == "stop"));
}
