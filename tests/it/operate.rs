//! Operator commands on a live gateway, through the real binary: `airlock tools`, `log`,
//! `approvals`, `keys rotate` and `reload` reach the running gateway of the data dir over
//! its control socket (the gateway holds the databases), and the operator and token rules
//! hold there.
//!
//! The gateway is `airlock serve` of a stdio client (it owns the data dir and opens the
//! socket); the CLI runs as a separate process, as an operator at a terminal would.

use std::process::{Output, Stdio};
use std::time::Duration;

use rmcp::model::Tool;
use rmcp::service::RunningService;
use rmcp::RoleClient;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::util::{ALLOW_ALL, Setup, TestClient, airlock, call, stderr, stdout, text_of};

/// A correctness wait for something the gateway must get to (not a timing assertion).
const LIMIT: Duration = Duration::from_secs(60);

/// `airlock <args> --config <setup>` with `env` set; waits for it.
async fn cli(setup: &Setup, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(airlock())
        .args(args)
        .arg("--config")
        .arg(setup.config())
        .envs(env.iter().copied())
        .env_remove("AIRLOCK_LOG")
        .output()
        .await
        .expect("run airlock")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed ({:?}): {}{}", out.status.code(), stdout(out), stderr(out));
    stdout(out)
}

/// Every record of the live gateway's log, exported over the socket.
async fn live_records(setup: &Setup) -> Vec<Value> {
    let out = cli(setup, &["log", "export"], &[]).await;
    ok(&out, "log export").lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect()
}

fn risk_of(tools: &[Tool], name: &str) -> Option<String> {
    let tool = tools.iter().find(|t| t.name == name)?;
    tool.meta.as_ref()?.0.get("airlock/risk")?.as_str().map(str::to_owned)
}

async fn until_risk(client: &RunningService<RoleClient, TestClient>, name: &str, risk: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let tools = client.list_all_tools().await.expect("tools/list");
        if risk_of(&tools, name).as_deref() == Some(risk) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} never became {risk}: {:?}", risk_of(&tools, name));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A changed tool is critical (held, then expired); `airlock tools accept` against the
/// running gateway makes the very same session call it at once, and `tools list` through
/// the socket shows it trusted.
#[tokio::test]
async fn tools_accept_on_a_live_gateway_makes_a_changed_tool_callable_without_a_restart() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n[approvals]\ntimeout = \"1s\"\n");
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let client = setup.stdio(TestClient::new()).await;
    client
        .call_tool(call("demo__set_description", json!({"tool": "echo", "description": "Echo (now also uploads your files)"})))
        .await
        .expect("call");
    until_risk(&client, "demo__echo", "critical").await;
    let held = client.call_tool(call("demo__echo", json!({"text": "before"}))).await.expect("call");
    assert_eq!(held.is_error, Some(true), "a changed tool is not callable: {}", text_of(&held));

    let listed = ok(&cli(&setup, &["tools", "list", "--json"], &[]).await, "tools list");
    let rows: Vec<Value> = serde_json::from_str(&listed).expect("rows");
    let echo = rows.iter().find(|r| r["tool"] == "demo__echo").expect("echo listed");
    assert_eq!((echo["status"].as_str(), echo["risk"].as_str()), (Some("changed"), Some("critical")), "{echo}");

    let out = cli(&setup, &["tools", "accept", "demo__echo"], &[]).await;
    assert!(ok(&out, "tools accept").contains("the running gateway serves it now"), "{}", stdout(&out));
    until_risk(&client, "demo__echo", "low").await;
    let result = client.call_tool(call("demo__echo", json!({"text": "after"}))).await.expect("call");
    assert_eq!((result.is_error, text_of(&result).as_str()), (Some(false), "after"), "callable without a restart");

    let listed = ok(&cli(&setup, &["tools", "list", "--json"], &[]).await, "tools list");
    let rows: Vec<Value> = serde_json::from_str(&listed).expect("rows");
    let echo = rows.iter().find(|r| r["tool"] == "demo__echo").expect("echo listed");
    assert_eq!(echo["status"], "trusted", "{echo}");
    client.cancel().await.expect("close");
}

/// `log tail -f` sees a new call's records; `log show`, `log verify` and `log export` work
/// while the gateway holds the database, and the export verifies on its own;
/// `log export --follow --after N` streams the next group with its checkpoint.
#[tokio::test]
async fn log_tail_follow_show_verify_and_export_on_a_live_gateway() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let mut tail = tokio::process::Command::new(airlock())
        .args(["log", "tail", "-f", "-n", "0", "--config"])
        .arg(setup.config())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn log tail -f");
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().expect("stdout")).lines();
    // `-n 0` prints only what comes after the follower attached, and nothing says when it
    // has: call until a call's records come through (a correctness wait, not a timing one).
    let reading = tokio::spawn(async move {
        let mut kinds = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read tail") {
            let record: Value = serde_json::from_str(&line).expect("a record a line");
            if record["tool"] == "demo__echo" {
                kinds.push(record["kind"].as_str().unwrap_or("").to_owned());
            }
            if kinds.iter().any(|k| k == "decision") && kinds.len() >= 2 {
                return kinds;
            }
        }
        panic!("log tail -f ended");
    });
    let seen = tokio::time::timeout(LIMIT, async {
        loop {
            let echoed = client.call_tool(call("demo__echo", json!({"text": "one"}))).await.expect("call");
            assert_eq!(text_of(&echoed), "one");
            if reading.is_finished() {
                return reading.await.expect("reader");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
    .expect("log tail -f printed the call's records");
    assert!(seen.contains(&"decision".to_owned()), "{seen:?}");
    tail.kill().await.expect("stop tail");

    let shown = ok(&cli(&setup, &["log", "show", "1"], &[]).await, "log show");
    assert!(shown.contains("\"seq\":1"), "{shown}");
    let verified = ok(&cli(&setup, &["log", "verify"], &[]).await, "log verify");
    assert!(verified.starts_with("ok: records 1..=") && verified.contains("running gateway"), "{verified}");

    let file = setup.path().join("live.jsonl");
    let out = cli(&setup, &["log", "export", "--out", file.to_str().expect("utf-8")], &[]).await;
    ok(&out, "log export");
    let out = cli(&setup, &["log", "verify", "--export", file.to_str().expect("utf-8")], &[]).await;
    assert!(ok(&out, "verify the export").starts_with("ok: records 1..="), "{}", stdout(&out));

    let last = live_records(&setup).await.iter().filter_map(|r| r["seq"].as_u64()).max().expect("records");
    let after = last.to_string();
    let mut follow = tokio::process::Command::new(airlock())
        .args(["log", "export", "--follow", "--after", &after, "--config"])
        .arg(setup.config())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn export --follow");
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let header: Value = serde_json::from_str(&lines.next_line().await.expect("read").expect("header")).expect("json");
    assert_eq!(header["since"], last + 1, "{header}");
    client.call_tool(call("demo__echo", json!({"text": "two"}))).await.expect("call");
    let streamed = tokio::time::timeout(LIMIT, async {
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read export") {
            let value: Value = serde_json::from_str(&line).expect("json");
            let checkpoint = value["kind"] == "checkpoint";
            got.push(value);
            if checkpoint && got.iter().any(|v| v["tool"] == "demo__echo") {
                return got;
            }
        }
        panic!("export --follow ended");
    })
    .await
    .expect("export --follow streamed the new group and its checkpoint");
    let first_seq = streamed.iter().find(|v| v["kind"] != "checkpoint").and_then(|v| v["seq"].as_u64()).expect("a record");
    assert_eq!(first_seq, last + 1, "records after --after, none twice: {streamed:?}");
    follow.kill().await.expect("stop follow");
    client.cancel().await.expect("close");
}

/// `keys rotate` while the gateway runs: the writer switches keys in order (`key_rotated`
/// signed by the old key), later records are signed by the new one, and the log verifies
/// live and, once the gateway is gone, from the files.
#[tokio::test]
async fn keys_rotate_on_a_live_gateway_then_log_verify_passes() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    client.call_tool(call("demo__echo", json!({"text": "before"}))).await.expect("call");
    let out = cli(&setup, &["keys", "rotate"], &[]).await;
    let text = ok(&out, "keys rotate");
    assert!(text.starts_with("rotated key "), "{text}");
    client.call_tool(call("demo__echo", json!({"text": "after"}))).await.expect("call after rotation");
    let verified = ok(&cli(&setup, &["log", "verify"], &[]).await, "log verify");
    assert!(verified.contains(" then "), "signed by the old key, then the new: {verified}");
    let records = live_records(&setup).await;
    assert_eq!(records.iter().filter(|r| r["kind"] == "key_rotated").count(), 1);
    client.cancel().await.expect("close");
    let offline = crate::util::airlock_log(&setup.data_dir(), &["verify"]);
    assert!(offline.status.success(), "{}{}", stdout(&offline), stderr(&offline));
}

/// Tokens of the approvals test: carol is the stdio caller's person and an SRE; bob an SRE.
const CAROL: &str = "tok-carol-0123456789";
const BOB: &str = "tok-bob-0123456789";

fn approvals_setup() -> Setup {
    let mut config = String::from(
        "[gateway]\ndata_dir = \"data\"\n[approvals]\ntimeout = \"10m\"\n[identity]\nstdio_principal = \"agent\"\nstdio_person = \"carol\"\n",
    );
    for (name, token, person) in [("carol", CAROL, "person = \"carol\"\n"), ("bob", BOB, "")] {
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
        config.push_str(&format!("\n[[identity.tokens]]\nname = \"{name}\"\nsha256 = \"{digest}\"\ngroups = [\"sre\"]\n{person}"));
    }
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy(
        "grants",
        "[[rule]]\nid = \"grants-need-an-sre\"\ntools = [\"demo__grant_role\"]\neffect = \"approve\"\napprovers = [\"group:sre\"]\nreason = \"role grants need an SRE\"\n",
    );
    setup
}

/// A held call of a running stdio client is approved from a terminal with
/// `airlock approvals approve --token-env`: the token's identity decides, over the socket.
/// The caller's own person's token is refused (never the caller), whoever the local user is.
#[tokio::test]
async fn approvals_approve_over_the_socket_counts_as_the_token_and_never_the_caller() {
    let setup = approvals_setup();
    let client = setup.stdio(TestClient::new()).await;
    let peer = client.peer().clone();
    let held = tokio::spawn(async move {
        peer.call_tool(call("demo__grant_role", json!({"user": "erin", "role": "admin"}))).await.expect("the held call answers")
    });
    let env_bob = [("BOB_TOKEN", BOB)];
    let deadline = tokio::time::Instant::now() + LIMIT;
    let id = loop {
        let out = cli(&setup, &["approvals", "list", "--state", "pending", "--json", "--token-env", "BOB_TOKEN"], &env_bob).await;
        let body: Value = serde_json::from_str(&ok(&out, "approvals list")).expect("json");
        if let Some(id) = body["approvals"].as_array().and_then(|a| a.first()).and_then(|a| a["id"].as_str()) {
            break id.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no pending approval appeared: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let own = cli(&setup, &["approvals", "approve", &id, "--token-env", "CAROL_TOKEN"], &[("CAROL_TOKEN", CAROL)]).await;
    assert_eq!(own.status.code(), Some(1), "the caller's own token is refused: {}{}", stdout(&own), stderr(&own));
    assert!(stderr(&own).contains("refused"), "{}", stderr(&own));
    let no_token = cli(&setup, &["approvals", "approve", &id, "--token-env", "NOBODY_SET_THIS"], &[]).await;
    assert!(!no_token.status.success() && stderr(&no_token).contains("no API token"), "{}", stderr(&no_token));

    let shown = cli(&setup, &["approvals", "show", &id, "--token-env", "BOB_TOKEN"], &env_bob).await;
    assert!(ok(&shown, "approvals show").contains("grants-need-an-sre"), "{}", stdout(&shown));
    let approved = cli(&setup, &["approvals", "approve", &id, "--token-env", "BOB_TOKEN", "--comment", "ok"], &env_bob).await;
    assert!(ok(&approved, "approvals approve").contains("approved"), "{}", stdout(&approved));
    let result = tokio::time::timeout(LIMIT, held).await.expect("released").expect("join");
    assert_ne!(result.is_error, Some(true), "the approved call ran: {}", text_of(&result));

    let records = live_records(&setup).await;
    let decisions: Vec<&Value> = records.iter().filter(|r| r["kind"] == "approval_decided").collect();
    assert_eq!(decisions.len(), 1, "only bob's decision counted: {decisions:?}");
    assert_eq!((decisions[0]["approver"].as_str(), decisions[0]["channel"].as_str()), (Some("bob"), Some("api")));
    client.cancel().await.expect("close");
}

/// With no gateway running and no HTTP address, `approvals` says what is possible; `reload`
/// says there is nothing to reload.
#[tokio::test]
async fn without_a_gateway_approvals_and_reload_say_what_is_possible() {
    let setup = approvals_setup();
    let out = cli(&setup, &["approvals", "list", "--token-env", "BOB_TOKEN"], &[("BOB_TOKEN", BOB)]).await;
    assert!(!out.status.success() && stderr(&out).contains("no gateway is running"), "{}", stderr(&out));
    assert!(stderr(&out).contains("held calls exist only while their gateway runs"), "{}", stderr(&out));
    let out = cli(&setup, &["reload"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to reload"), "{}", stderr(&out));
}

/// An admitted peer that is not an operator (uid `nobody`, admitted by `socket_clients`
/// through its group) cannot reload, accept a tool, rotate the key or read the log; each
/// refusal is a `control_refused` record. Needs root (to run the CLI as another uid) and
/// `setpriv`; skipped loudly otherwise.
#[tokio::test]
async fn an_admitted_non_operator_peer_cannot_reload_accept_rotate_or_read_the_log() {
    let root = nix::unistd::Uid::current().is_root();
    let setpriv = std::path::Path::new("/usr/bin/setpriv").exists();
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
    let group = nobody.as_ref().and_then(|u| nix::unistd::Group::from_gid(u.gid).ok().flatten());
    let (Some(nobody), Some(group), true, true) = (nobody, group, root, setpriv) else {
        eprintln!("SKIPPED: an_admitted_non_operator_peer_cannot_reload_accept_rotate_or_read_the_log needs root, setpriv and a `nobody` user (root={root}, setpriv={setpriv})");
        return;
    };
    let setup = Setup::new(&format!("[gateway]\ndata_dir = \"data\"\nsocket_clients = [\"group:{}\"]\n", group.name));
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    // The peer must reach the socket and read the config: open the directories' search bit.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(setup.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let client = setup.stdio(TestClient::new()).await;
    std::fs::set_permissions(setup.data_dir(), std::fs::Permissions::from_mode(0o711)).expect("chmod data");
    let as_nobody = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("/usr/bin/setpriv");
        cmd.arg(format!("--reuid={}", nobody.uid))
            .arg(format!("--regid={}", nobody.gid))
            .arg("--init-groups")
            .arg(airlock())
            .args(args)
            .arg("--config")
            .arg(setup.config())
            .env_remove("AIRLOCK_LOG")
            .current_dir("/");
        cmd
    };
    // Admitted: status answers.
    let status = as_nobody(&["gateway", "status"]).output().await.expect("run");
    assert!(status.status.success(), "an admitted peer gets status: {}", stderr(&status));
    for (args, request) in [
        (&["reload"][..], "reload"),
        (&["tools", "accept", "demo__echo"][..], "tools_accept"),
        (&["keys", "rotate"][..], "keys_rotate"),
        (&["log", "tail"][..], "log_tail"),
        (&["report", "--format", "json"][..], "report"),
        (&["metrics"][..], "metrics"),
    ] {
        let out = as_nobody(args).output().await.expect("run");
        assert!(!out.status.success(), "{request} as a non-operator must fail: {}", stdout(&out));
        assert!(stderr(&out).contains("operator commands are for"), "{request}: {}", stderr(&out));
    }
    let records = live_records(&setup).await;
    let refused: Vec<&str> =
        records.iter().filter(|r| r["kind"] == "control_refused").filter_map(|r| r["detail"]["request"].as_str()).collect();
    assert_eq!(refused, ["reload", "tools_accept", "keys_rotate", "log_tail", "report", "metrics"], "{records:?}");
    assert!(!records.iter().any(|r| r["kind"] == "key_rotated"), "no rotation happened");
    client.cancel().await.expect("close");
}

/// `airlock reload` from a terminal: a policy edit takes effect on the next call of a
/// running stdio client, and a broken policy is refused (exit 1, `file:line`) with the
/// running set kept.
#[tokio::test]
async fn airlock_reload_applies_a_policy_edit_and_refuses_a_broken_one() {
    let setup = Setup::with_demo();
    setup.policy("echo", "[[rule]]\nid = \"echo\"\ntools = [\"demo__echo\"]\neffect = \"allow\"\nreason = \"harmless\"\n");
    let client = setup.stdio(TestClient::new()).await;
    let before = client.call_tool(call("demo__echo", json!({"text": "one"}))).await.expect("call");
    assert_ne!(before.is_error, Some(true), "{}", text_of(&before));

    setup.policy("echo", "[[rule]]\nid = \"echo\"\ntools = [\"demo__echo\"]\neffect = \"deny\"\nreason = \"echo is off now\"\n");
    let out = cli(&setup, &["reload"], &[]).await;
    let report = ok(&out, "reload");
    assert!(report.contains("policies"), "the report names what changed: {report}");
    let after = client.call_tool(call("demo__echo", json!({"text": "two"}))).await.expect("call");
    assert_eq!(after.is_error, Some(true), "denied by the reloaded set: {}", text_of(&after));
    assert!(text_of(&after).contains("echo is off now"), "{}", text_of(&after));

    setup.policy("echo", "[[rule]]\nid = \"echo\"\ntools = [\"demo__echo\"]\neffect = \"maybe\"\n");
    let refused = cli(&setup, &["reload"], &[]).await;
    assert_eq!(refused.status.code(), Some(1), "{}{}", stdout(&refused), stderr(&refused));
    let said = format!("{}{}", stdout(&refused), stderr(&refused));
    assert!(said.contains("echo.toml:4:"), "names file and line: {said}");
    let still = client.call_tool(call("demo__echo", json!({"text": "three"}))).await.expect("call");
    assert_eq!(still.is_error, Some(true), "the last good set still decides: {}", text_of(&still));

    let records = live_records(&setup).await;
    let loaded: Vec<&Value> = records.iter().filter(|r| r["kind"] == "config_loaded").collect();
    assert_eq!(loaded.len(), 2, "start and one reload");
    assert_eq!(records.iter().filter(|r| r["kind"] == "config_rejected").count(), 1);
    let decisions: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision").collect();
    assert_eq!(decisions[0]["policy_sha256"], loaded[0]["policy_sha256"]);
    assert_eq!(decisions[2]["policy_sha256"], loaded[1]["policy_sha256"]);
    client.cancel().await.expect("close");
}

/// `airlock report` on a running gateway (over the socket, verified live) names both policy
/// versions of a run with a reload, each with the decisions it took, and the totals match.
#[tokio::test]
async fn a_report_from_a_running_gateway_names_the_policy_versions_of_a_reload() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    client.call_tool(call("demo__echo", json!({"text": "one"}))).await.expect("call");
    setup.policy("echo", "[[rule]]\nid = \"echo\"\ntools = [\"demo__echo\"]\neffect = \"deny\"\nreason = \"echo is off now\"\n");
    ok(&cli(&setup, &["reload"], &[]).await, "reload");
    client.call_tool(call("demo__echo", json!({"text": "two"}))).await.expect("call");
    client.call_tool(call("demo__echo", json!({"text": "three"}))).await.expect("call");

    let out = cli(&setup, &["report", "--format", "json"], &[]).await;
    let e: Value = serde_json::from_str(&ok(&out, "report")).expect("report JSON");
    assert_eq!(e["verification"]["status"], "intact", "{}", e["verification"]);
    assert_eq!(e["totals"]["calls"], 3, "{}", e["totals"]);
    assert_eq!(e["totals"]["by_decision"]["allow"], 1, "{}", e["totals"]);
    assert_eq!(e["totals"]["by_decision"]["deny"], 2, "{}", e["totals"]);
    let versions = e["policy_versions"].as_array().expect("policy versions");
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[0]["reason"], "start");
    assert_eq!(versions[1]["reason"], "reload");
    assert_eq!(versions[0]["decisions"], 1, "{versions:?}");
    assert_eq!(versions[1]["decisions"], 2, "{versions:?}");
    let records = live_records(&setup).await;
    let loaded: Vec<&Value> = records.iter().filter(|r| r["kind"] == "config_loaded").collect();
    assert_eq!(versions[1]["policy_sha256"], loaded[1]["detail"]["policy_sha256"]);

    let html = ok(&cli(&setup, &["report"], &[]).await, "report html");
    assert!(html.contains("<svg") && html.contains("intact"), "an HTML report with its charts");
    client.cancel().await.expect("close");
}
