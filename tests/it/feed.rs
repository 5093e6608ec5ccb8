//! The audit trail as a feed, through the binary: `log export --format ocsf`, `--follow
//! --after`, and the `[audit.sink]` HTTP sink delivering to a collector in this process,
//! across SIGKILLs and while the collector is down or failing.
//!
//! The collector's rule (README, "The audit trail as a feed"): it keeps the first copy of
//! each sequence number; a later copy of a seq must be byte-identical (a resend after a
//! crash between its 2xx and the sink saving its position) and is dropped.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::util::{ALLOW_ALL, Setup, TestClient, airlock, airlock_log, call, eventually, export};

/// How the collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Accept,
    Fail,
}

#[derive(Debug)]
struct Collector {
    mode: Mode,
    /// seq → the first line received for it.
    lines: BTreeMap<u64, Vec<u8>>,
    duplicates: u64,
    /// Resent seqs whose bytes differed from the first copy, and other protocol faults.
    faults: Vec<String>,
    posts: u64,
    refused: u64,
    authorization: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Collector>>;

fn seq_of(line: &Value) -> Option<u64> {
    line.get("seq").or_else(|| line.pointer("/metadata/sequence")).and_then(Value::as_u64)
}

async fn receive(State(c): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let mut c = c.lock().expect("collector");
    c.posts += 1;
    c.authorization.push(headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned));
    if c.mode == Mode::Fail {
        c.refused += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let (first, last) = (header("airlock-first-seq"), header("airlock-last-seq"));
    let mut seqs = Vec::new();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(seq) = serde_json::from_slice::<Value>(line).ok().as_ref().and_then(seq_of) else {
            c.faults.push(format!("a line without seq: {}", String::from_utf8_lossy(line)));
            continue;
        };
        seqs.push(seq);
        match c.lines.get(&seq) {
            Some(kept) if kept.as_slice() == line => c.duplicates += 1,
            Some(_) => c.faults.push(format!("seq {seq} resent with other bytes")),
            None => {
                c.lines.insert(seq, line.to_vec());
            }
        }
    }
    let contiguous = seqs.windows(2).all(|w| w[1] == w[0] + 1);
    if !contiguous || first != seqs.first().copied() || last != seqs.last().copied() {
        c.faults.push(format!("batch headers {first:?}..{last:?} do not match its lines {seqs:?}"));
    }
    StatusCode::NO_CONTENT
}

/// Serves a collector on `listener`.
fn serve_collector(listener: tokio::net::TcpListener, mode: Mode) -> Shared {
    let shared: Shared = Arc::new(Mutex::new(Collector {
        mode,
        lines: BTreeMap::new(),
        duplicates: 0,
        faults: Vec::new(),
        posts: 0,
        refused: 0,
        authorization: Vec::new(),
    }));
    let app = axum::Router::new().route("/ingest", axum::routing::post(receive)).with_state(shared.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    shared
}

/// The first seq missing from 1..=n, if any.
fn first_gap(c: &Collector, n: u64) -> Option<u64> {
    (1..=n).find(|s| !c.lines.contains_key(s))
}

/// Stops a gateway the way an operator does (SIGTERM), so the sink delivers what is left.
async fn stop(mut child: tokio::process::Child) {
    let pid = child.id().expect("pid").to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("gateway stops").expect("wait");
}

fn sink_config(url: &str, format: &str, batch: u32) -> String {
    format!("[gateway]\ndata_dir = \"data\"\n[audit.sink]\nurl = \"{url}\"\nformat = \"{format}\"\ntoken_env = \"SINK_TOKEN\"\nbatch = {batch}\n")
}

const TOKEN: &str = "sink-token-7f3a";
const ROUNDS: usize = 3;
const CALLERS: usize = 4;
const BATCH: u32 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sink_resumes_after_sigkill_with_no_gap_and_only_identical_resends() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/ingest", listener.local_addr().expect("addr"));
    let collector = serve_collector(listener, Mode::Accept);
    let setup = Setup::new(&sink_config(&url, "jsonl", BATCH));
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    eprintln!("seed {seed}");
    let mut stderr = Vec::new();
    for round in 0..ROUNDS {
        let mut gateway = setup.http_with_env(&[("SINK_TOKEN", TOKEN)]).await;
        let mut callers = Vec::new();
        for caller in 0..CALLERS {
            let client = gateway.client(TestClient::new()).await;
            callers.push(tokio::spawn(async move {
                for i in 0.. {
                    let args = json!({"text": format!("r{round}-c{caller}-{i}")});
                    if client.call_tool(call("demo__echo", args)).await.is_err() {
                        break;
                    }
                }
            }));
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(300 + (seed >> 33) % 700)).await;
        gateway.child.kill().await.expect("SIGKILL the gateway");
        for c in &callers {
            c.abort();
        }
        stderr.extend(gateway.stderr.lock().expect("stderr").clone());
    }
    // One more run, stopped cleanly: the sink resumes and delivers everything up to the end.
    let gateway = setup.http_with_env(&[("SINK_TOKEN", TOKEN)]).await;
    let client = gateway.client(TestClient::new()).await;
    client.call_tool(call("demo__echo", json!({"text": "last"}))).await.expect("last call");
    let _ = client.cancel().await;
    let log = gateway.stderr.clone();
    stop(gateway.child).await;
    stderr.extend(log.lock().expect("stderr").clone());

    let records = export(&setup.data_dir());
    let size = records.iter().filter_map(|r| r.get("seq").and_then(Value::as_u64)).max().expect("records");
    let c = collector.lock().expect("collector");
    assert!(c.faults.is_empty(), "collector saw faults: {:?}", c.faults);
    assert_eq!(first_gap(&c, size), None, "a gap in what the collector received (log has {size} records)");
    assert_eq!(c.lines.len() as u64, size, "the collector has records the log does not");
    for r in records.iter().filter(|r| r.get("seq").is_some() && r["kind"] != "checkpoint") {
        let seq = r["seq"].as_u64().expect("seq");
        let sent: Value = serde_json::from_slice(&c.lines[&seq]).expect("json");
        assert_eq!(&sent, r, "record {seq} reached the collector changed");
    }
    // Resuming means resending at most the batch in flight at each kill, not the log again.
    assert!(c.duplicates <= (ROUNDS as u64) * u64::from(BATCH), "{} duplicates over {ROUNDS} kills", c.duplicates);
    assert!(c.authorization.iter().all(|a| a.as_deref() == Some(&format!("Bearer {TOKEN}"))), "every POST carries the bearer token");
    assert!(stderr.iter().all(|l| !l.contains(TOKEN)), "the token reached the log");
    eprintln!("{size} records delivered over {ROUNDS} SIGKILLs, {} posts, {} identical resends", c.posts, c.duplicates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_that_is_down_or_failing_blocks_no_call_and_is_caught_up() {
    // A port nobody listens on yet: the sink's connections are refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let url = format!("http://{addr}/ingest");
    let setup = Setup::new(&sink_config(&url, "ocsf", 50));
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let gateway = setup.http_with_env(&[("SINK_TOKEN", TOKEN)]).await;
    let client = gateway.client(TestClient::new()).await;
    for i in 0..10 {
        let r = client.call_tool(call("demo__echo", json!({"text": format!("down {i}")}))).await.expect("call while the collector is down");
        assert_ne!(r.is_error, Some(true));
    }
    // Now it listens but answers 500: still no call waits on it.
    let collector = serve_collector(tokio::net::TcpListener::bind(addr).await.expect("rebind"), Mode::Fail);
    assert!(eventually(Duration::from_secs(60), || collector.lock().expect("c").refused > 0).await, "the sink never retried");
    for i in 0..10 {
        let r = client.call_tool(call("demo__echo", json!({"text": format!("failing {i}")}))).await.expect("call while the collector fails");
        assert_ne!(r.is_error, Some(true));
    }
    assert!(collector.lock().expect("c").lines.is_empty());
    collector.lock().expect("c").mode = Mode::Accept;
    let caught_up = eventually(Duration::from_secs(90), || {
        let c = collector.lock().expect("c");
        let completed = c.lines.values().filter(|l| serde_json::from_slice::<Value>(l).is_ok_and(|v| v["unmapped"]["airlock"]["kind"] == "call_completed")).count();
        completed == 20 && first_gap(&c, *c.lines.keys().last().unwrap_or(&0)).is_none()
    })
    .await;
    assert!(caught_up, "the collector was not caught up once it accepted");
    let _ = client.cancel().await;
    stop(gateway.child).await;
    let size = export(&setup.data_dir()).iter().filter_map(|r| r.get("seq").and_then(Value::as_u64)).max().expect("records");
    let c = collector.lock().expect("c");
    assert!(c.faults.is_empty(), "{:?}", c.faults);
    assert_eq!((first_gap(&c, size), c.lines.len() as u64), (None, size));
    let first: Value = serde_json::from_slice(&c.lines[&1]).expect("json");
    assert_eq!(first["class_uid"], 6002, "the sink sent OCSF: gateway_started is Application Lifecycle");
    let exported = airlock_log(&setup.data_dir(), &["export", "--format", "ocsf"]);
    let exported: Vec<&[u8]> = exported.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let sent: Vec<&[u8]> = c.lines.values().map(Vec::as_slice).collect();
    assert!(sent == exported, "the sink's OCSF lines are `log export --format ocsf`'s, byte for byte");
}

/// Runs `log export` with `args` on a stopped data dir; its lines as JSON.
fn export_lines(setup: &Setup, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let out = airlock_log(&setup.data_dir(), &all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

async fn some_calls(setup: &Setup, tag: &str) {
    let client = setup.stdio(TestClient::new()).await;
    for i in 0..3 {
        client.call_tool(call("demo__echo", json!({"text": format!("{tag} {i}")}))).await.expect("call");
    }
    let denied = client.call_tool(call("demo__echo", json!({"text": "forbidden"}))).await.expect("call");
    assert_eq!(denied.is_error, Some(true));
    let _ = client.cancel().await;
}

const DENY_FORBIDDEN: &str = "[[rule]]\nid = \"no-forbidden\"\ntools = [\"demo__echo\"]\nwhen = { \"/text\" = { regex = \"^forbidden$\" } }\neffect = \"deny\"\nreason = \"not that\"\n";

#[tokio::test]
async fn export_as_ocsf_maps_each_record_and_keeps_it_traceable() {
    let setup = Setup::with_demo();
    setup.policy("deny", DENY_FORBIDDEN);
    some_calls(&setup, "ocsf").await;
    let out = airlock_log(&setup.data_dir(), &["export"]);
    let raw: Vec<&[u8]> = out.stdout.split(|&b| b == b'\n').filter(|l| l.starts_with(b"{\"") && !l.starts_with(b"{\"chain_head")).collect();
    let raw: Vec<&[u8]> = raw.into_iter().filter(|l| serde_json::from_slice::<Value>(l).is_ok_and(|v| v["kind"] != "checkpoint")).collect();
    let events = export_lines(&setup, &["--format", "ocsf"]);
    assert_eq!(events.len(), raw.len(), "one event per record");
    for (ev, line) in events.iter().zip(&raw) {
        let rec: Value = serde_json::from_slice(line).expect("record");
        assert_eq!(ev["unmapped"]["airlock"], rec, "the record rides along unchanged");
        assert_eq!(ev["metadata"]["sequence"], rec["seq"]);
        assert_eq!(ev["metadata"]["version"], "1.7.0");
        let class = ev["class_uid"].as_u64().expect("class_uid");
        assert!([3004, 6002, 6003].contains(&class), "{ev}");
        assert_eq!(ev["type_uid"].as_u64(), Some(class * 100 + ev["activity_id"].as_u64().expect("activity")));
        assert_eq!(ev["category_uid"].as_u64(), Some(class / 1000));
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, line));
        assert_eq!(ev["metadata"]["uid"].as_str(), Some(sha.as_str()), "metadata.uid is the stored record's SHA-256");
    }
    let deny = events.iter().find(|e| e["unmapped"]["airlock"]["kind"] == "decision" && e["unmapped"]["airlock"]["decision"] == "deny").expect("the deny");
    assert_eq!((deny["class_uid"].clone(), deny["status_id"].clone(), deny["status_detail"].clone()), (json!(6003), json!(2), json!("rule \"no-forbidden\" denies this call: not that")));
    let after = export_lines(&setup, &["--format", "ocsf", "--after", "3"]);
    assert_eq!(after.first().map(|e| e["metadata"]["sequence"].clone()), Some(json!(4)));
}

/// `serve --http` that retries while a follower holds the database for a moment.
async fn start_retrying(setup: &Setup) -> crate::util::HttpGateway {
    for _ in 0..50 {
        let mut child = tokio::process::Command::new(airlock())
            .args(["serve", "--http", "127.0.0.1:0", "--config"])
            .arg(setup.config())
            .env("AIRLOCK_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut url = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(u) = line.strip_prefix("airlock: listening on ") {
                url = Some(u.trim().to_owned());
                break;
            }
        }
        if let Some(url) = url {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return crate::util::HttpGateway { child, url, stderr: Arc::default() };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway never started");
}

/// The next line a follower printed, raw and parsed.
async fn next_line(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> (String, Value) {
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await.expect("a line in time").expect("read").expect("a line");
    let value = serde_json::from_str(&line).expect("json");
    (line, value)
}

/// `log verify --export` of `lines` (written to a file in the setup): its stdout on success.
fn verify_export_lines(setup: &Setup, name: &str, lines: &[String]) -> String {
    let file = setup.path().join(name);
    std::fs::write(&file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write export");
    let out = airlock_log(&setup.data_dir(), &["verify", "--export", file.to_str().expect("utf-8")]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} does not verify: {said}{}", String::from_utf8_lossy(&out.stderr));
    said
}

#[tokio::test]
async fn export_follow_resumes_after_a_seq_and_prints_records_of_later_runs() {
    let setup = Setup::with_demo();
    setup.policy("deny", DENY_FORBIDDEN);
    some_calls(&setup, "first").await;
    let before = export(&setup.data_dir()).iter().filter_map(|r| r.get("seq").and_then(Value::as_u64)).max().expect("records");
    let mut follow = tokio::process::Command::new(airlock())
        .args(["log", "export", "--follow", "--after", "2", "--data-dir"])
        .arg(setup.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn follow");
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let (first, header) = next_line(&mut lines).await;
    assert_eq!((header["kind"].clone(), header["since"].clone()), (json!("export"), json!(3)), "the export header first: {header}");
    let mut kept = vec![first];
    let mut seen = Vec::new();
    while seen.last().copied() != Some(before) {
        let (line, value) = next_line(&mut lines).await;
        kept.push(line);
        if value["kind"] != "checkpoint" {
            seen.push(value["seq"].as_u64().expect("seq"));
        }
    }
    // A later run of the gateway: its records follow, once it lets go of the database.
    let gateway = start_retrying(&setup).await;
    let client = gateway.client(TestClient::new()).await;
    client.call_tool(call("demo__echo", json!({"text": "second"}))).await.expect("call");
    let _ = client.cancel().await;
    stop(gateway.child).await;
    let mut completed = false;
    loop {
        let (line, value) = next_line(&mut lines).await;
        kept.push(line);
        if value["kind"] == "checkpoint" {
            // Stop at the checkpoint that covers the later run's call: what a follower
            // interrupted there has saved is a whole export.
            if completed && value["size"].as_u64() == seen.last().copied() {
                break;
            }
            continue;
        }
        seen.push(value["seq"].as_u64().expect("seq"));
        completed |= value["kind"] == "call_completed";
    }
    let expected: Vec<u64> = (3..=*seen.last().expect("seen")).collect();
    assert_eq!(seen, expected, "every record after 2, once each, in order");
    let _ = follow.kill().await;
    let _ = follow.wait().await;
    let said = verify_export_lines(&setup, "followed.jsonl", &kept);
    assert!(said.starts_with(&format!("ok: records 3..={}", seen.last().expect("seen"))), "{said}");
}

/// Following a running gateway (through its socket) and its stopped data dir print the same
/// lines, and both verify as an export.
#[tokio::test]
async fn export_follow_prints_the_same_export_live_and_from_the_files() {
    let setup = Setup::with_demo();
    setup.policy("deny", DENY_FORBIDDEN);
    let client = setup.stdio(TestClient::new()).await;
    client.call_tool(call("demo__echo", json!({"text": "before"}))).await.expect("call");
    let mut live = tokio::process::Command::new(airlock())
        .args(["log", "export", "--follow", "--config"])
        .arg(setup.config())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn a live follower");
    let mut lines = tokio::io::BufReader::new(live.stdout.take().expect("stdout")).lines();
    let (first, header) = next_line(&mut lines).await;
    assert_eq!(header["kind"], "export", "{header}");
    let mut kept = vec![first];
    // A call made while following: its group comes through with its checkpoint.
    client.call_tool(call("demo__echo", json!({"text": "while following"}))).await.expect("call");
    let (mut last_seq, mut completed) = (0, 0);
    loop {
        let (line, value) = next_line(&mut lines).await;
        kept.push(line);
        if value["kind"] == "checkpoint" {
            if completed == 2 && value["size"].as_u64() == Some(last_seq) {
                break;
            }
            continue;
        }
        last_seq = value["seq"].as_u64().expect("seq");
        completed += usize::from(value["kind"] == "call_completed");
    }
    live.kill().await.expect("stop the live follower");
    let said = verify_export_lines(&setup, "live.jsonl", &kept);
    assert!(said.starts_with(&format!("ok: records 1..={last_seq}")), "{said}");
    let _ = client.cancel().await;
    crate::util::stop_gateway(&setup.data_dir());

    // From the files: the same lines, in the same order.
    let mut offline = tokio::process::Command::new(airlock())
        .args(["log", "export", "--follow", "--data-dir"])
        .arg(setup.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn an offline follower");
    let mut lines = tokio::io::BufReader::new(offline.stdout.take().expect("stdout")).lines();
    let mut again = Vec::new();
    while again.len() < kept.len() {
        again.push(next_line(&mut lines).await.0);
    }
    offline.kill().await.expect("stop the offline follower");
    assert_eq!(again, kept, "the offline follower printed what the live one did");
}
