//! Tamper evidence beyond the gateway's disk (issue 15): checkpoints as signed notes,
//! consistency proofs, `log verify --trusted`, a real `airlock witness serve` next to a
//! real gateway, and what `log verify` says about a damaged database.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use airlock::audit::{AuditConfig, AuditLog, Record, RecordKind};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::util::{Setup, TestClient, airlock, call, stdout};


fn run(args: &[&str]) -> Output {
    Command::new(airlock()).args(args).env("AIRLOCK_LOG", "warn").stdin(Stdio::null()).output().expect("run airlock")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `airlock log verify --data-dir DIR extra…`.
fn verify(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["log", "verify", "--data-dir", s(dir)];
    args.extend_from_slice(extra);
    run(&args)
}

/// Writes `n` records with the library, one group (and checkpoint) each.
fn write_log(dir: &Path, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let log = AuditLog::open(AuditConfig::new(dir)).expect("open log");
        for i in 0..n {
            let rec = Record::new(RecordKind::CallReceived).principal("alice").call_id(format!("c-{i}")).tool("fs__read_file");
            let _ = log.append(rec).await.expect("append");
        }
        log.close().await.expect("close");
    });
}

fn checkpoint_lines(dir: &Path) -> Vec<String> {
    let bytes = std::fs::read(dir.join("checkpoints.log")).expect("read checkpoints.log");
    String::from_utf8_lossy(&bytes).trim_end_matches('\0').lines().map(str::to_owned).collect()
}

#[test]
fn removing_the_last_line_of_checkpoints_log_is_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 5);
    let ok = verify(dir.path(), &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let mut lines = checkpoint_lines(dir.path());
    lines.pop();
    std::fs::write(dir.path().join("checkpoints.log"), lines.join("\n") + "\n").expect("rewrite");
    let out = verify(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("checkpoints.log lacks the last 1 checkpoint"), "{}", text(&out));
}

/// Byte flips across the database file and truncations of it: every outcome is exit 1
/// (never 2 or a crash) and names a checkpoint that still proves records.
#[test]
fn damaged_database_exits_1_naming_the_last_provable_checkpoint() {
    let pristine = tempfile::tempdir().expect("tempdir");
    write_log(pristine.path(), 30);
    let db_file = pristine.path().join("audit").join("db");
    let len = std::fs::metadata(&db_file).expect("db file").len();
    type Damage = Box<dyn Fn(&Path)>;
    let mut damages: Vec<(String, Damage)> = Vec::new();
    for fraction in [1u64, 3, 5, 7, 9] {
        let at = len * fraction / 10;
        damages.push((
            format!("flip 64 bytes at {at} of {len}"),
            Box::new(move |file: &Path| {
                let mut bytes = std::fs::read(file).expect("read db");
                for b in bytes.iter_mut().skip(at as usize).take(64) {
                    *b ^= 0x5a;
                }
                std::fs::write(file, bytes).expect("write db");
            }),
        ));
    }
    for keep in [len / 2, len / 10, 0] {
        damages.push((
            format!("truncate to {keep} of {len}"),
            Box::new(move |file: &Path| {
                std::fs::OpenOptions::new().write(true).open(file).and_then(|f| f.set_len(keep)).expect("truncate db");
            }),
        ));
    }
    for (what, damage) in damages {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(pristine.path(), dir.path());
        damage(&dir.path().join("audit").join("db"));
        let out = verify(dir.path(), &[]);
        let all = text(&out);
        eprintln!("{what}:\n{all}");
        assert_eq!(out.status.code(), Some(1), "{what}: {all}");
        assert!(stdout(&out).contains("last provable checkpoint: records 1..=30"), "{what}: {all}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(format!("{}/.", from.display())).arg(to).status().expect("cp");
    assert!(status.success());
}

/// A running `airlock witness serve`.
struct WitnessProcess {
    child: tokio::process::Child,
    url: String,
    vkey: String,
}

async fn start_witness(dir: &Path, log_key: &str) -> WitnessProcess {
    let mut child = tokio::process::Command::new(airlock())
        .args(["witness", "serve", "--dir", s(dir), "--log-key", log_key, "--listen", "127.0.0.1:0", "--name", "witness.test/w1"])
        .env("AIRLOCK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn witness");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut url, mut vkey) = (None, None);
    while url.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.expect("witness starts").expect("read").expect("witness exited");
        eprintln!("[witness] {line}");
        if let Some(k) = line.strip_prefix("airlock: witness key ") {
            vkey = Some(k.trim().to_owned());
        }
        if let Some(u) = line.strip_prefix("airlock: witness listening on ") {
            url = Some(u.trim().to_owned());
        }
    }
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[witness] {line}");
        }
    });
    WitnessProcess { child, url: url.expect("url"), vkey: vkey.expect("witness key line") }
}

/// Stops a gateway the way an operator does (SIGTERM), so it publishes its last checkpoint.
async fn stop(mut child: tokio::process::Child) {
    let pid = child.id().expect("pid").to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("gateway stops").expect("wait");
}

async fn calls(setup: &Setup, n: usize) -> crate::util::HttpGateway {
    let gateway = setup.http().await;
    let client = gateway.client(TestClient::new()).await;
    for i in 0..n {
        let result = client.call_tool(call("demo__echo", json!({"text": format!("call {i}")}))).await.expect("call");
        assert_ne!(result.is_error, Some(true));
    }
    let _ = client.cancel().await;
    gateway
}

async fn healthz_witness(url: &str) -> Value {
    let body: Value = reqwest::get(format!("{url}/healthz")).await.expect("healthz").json().await.expect("json");
    body["witness"].clone()
}

fn note_size(note: &str) -> u64 {
    note.lines().nth(1).and_then(|l| l.parse().ok()).expect("a checkpoint note")
}

/// The scenario of issue 15: a copy of the data dir taken earlier and put back after more
/// calls verifies as intact on its own, but not against a checkpoint kept elsewhere, and
/// the witness that saw the later log refuses to cosign the restored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_data_dir_is_caught_by_a_saved_checkpoint_and_refused_by_the_witness() {
    let setup = Setup::with_demo();
    let data = setup.data_dir();
    std::fs::create_dir_all(&data).expect("mkdir");
    airlock::audit::SigningKey::generate().expect("key").write_new(&data.join("audit-key")).expect("write key");
    let show = run(&["keys", "show", "--data-dir", s(&data)]);
    let note_key = stdout(&show).lines().find_map(|l| l.strip_prefix("note key").map(|k| k.trim().to_owned())).unwrap_or_else(|| panic!("{}", text(&show)));
    assert!(note_key.starts_with("airlock+"), "{note_key}");
    let key_file = setup.path().join("log.pub");
    std::fs::write(&key_file, &show.stdout).expect("write key file");

    let wdir = setup.path().join("witness-state");
    let witness = start_witness(&wdir, &note_key).await;
    let published = setup.path().join("published");
    std::fs::write(
        setup.config(),
        format!(
            "[gateway]\ndata_dir = \"data\"\n[audit.witness]\ninterval = \"100ms\"\ndir = \"published\"\n[[audit.witness.http]]\nurl = \"{}\"\nkey = \"{}\"\n",
            witness.url, witness.vkey
        ),
    )
    .expect("config");

    // Day 1: some calls; the witness cosigns.
    let gw = calls(&setup, 3).await;
    stop(gw.child).await;
    let day1 = std::fs::read_to_string(wdir.join("checkpoint.note")).expect("the witness kept a checkpoint");
    let day1_note = setup.path().join("day1.note");
    std::fs::write(&day1_note, &day1).expect("write");
    let old_copy = setup.path().join("old-data");
    std::fs::create_dir_all(&old_copy).expect("mkdir");
    copy_dir(&data, &old_copy);
    assert!(std::fs::read_dir(&published).expect("published dir").count() >= 1);

    // Day 2: more calls; the auditor saves the latest checkpoint.
    let gw = calls(&setup, 3).await;
    stop(gw.child).await;
    let saved = run(&["log", "checkpoint", "--data-dir", s(&data)]);
    assert_eq!(saved.status.code(), Some(0), "{}", text(&saved));
    let saved_note = setup.path().join("saved.note");
    std::fs::write(&saved_note, &saved.stdout).expect("write");
    let day2 = std::fs::read_to_string(wdir.join("checkpoint.note")).expect("witness state");
    assert!(note_size(&day2) > note_size(&day1));

    // The log proves it extends day 1's checkpoint, checkable with the key and two notes.
    let proof = run(&["log", "prove", "--data-dir", s(&data), "--consistency", &note_size(&day1).to_string()]);
    assert_eq!(proof.status.code(), Some(0), "{}", text(&proof));
    let proof_file = setup.path().join("proof.json");
    std::fs::write(&proof_file, &proof.stdout).expect("write");
    let check = run(&["log", "check-proof", s(&proof_file), "--pubkey", s(&key_file), "--old", s(&day1_note), "--new", s(&saved_note)]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let intact = verify(&data, &["--trusted", s(&saved_note), "--trusted", s(&day1_note), "--witness-key", &witness.vkey]);
    assert_eq!(intact.status.code(), Some(0), "{}", text(&intact));
    assert!(stdout(&intact).contains("cosigned by witness.test/w1"), "{}", text(&intact));

    // The rollback: day 1's copy put back. On its own it verifies; against what was kept
    // elsewhere it does not.
    std::fs::remove_dir_all(&data).expect("rm");
    std::fs::create_dir_all(&data).expect("mkdir");
    copy_dir(&old_copy, &data);
    let alone = verify(&data, &[]);
    assert_eq!(alone.status.code(), Some(0), "{}", text(&alone));
    for kept in [&saved_note, &wdir.join("checkpoint.note")] {
        let out = verify(&data, &["--trusted", s(kept)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(stdout(&out).contains(&format!("FAILED: trusted checkpoint {}", kept.display())), "{}", text(&out));
        assert!(stdout(&out).contains("rolled back"), "{}", text(&out));
    }
    // A day-2 proof does not check against a checkpoint from the restored log.
    let restored_cp = run(&["log", "checkpoint", "--data-dir", s(&data)]);
    let restored_note = setup.path().join("restored.note");
    std::fs::write(&restored_note, &restored_cp.stdout).expect("write");
    let mismatch = run(&["log", "check-proof", s(&proof_file), "--pubkey", s(&key_file), "--old", s(&day1_note), "--new", s(&restored_note)]);
    assert_eq!(mismatch.status.code(), Some(1), "{}", text(&mismatch));

    // The restored gateway runs on, calls are not blocked, and the witness refuses it.
    let gw = calls(&setup, 4).await;
    let mut refused = Value::Null;
    let seen = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let w = healthz_witness(&gw.url).await;
            let failing = w["targets"].as_array().into_iter().flatten().find(|t| t["target"].as_str().is_some_and(|n| n.starts_with("http")) && !t["last_error"].is_null());
            if let Some(t) = failing {
                refused = t.clone();
                break true;
            }
            if tokio::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(seen, "the witness gap shows in /healthz: {refused}");
    assert!(refused["unwitnessed_records"].as_u64().unwrap_or(0) > 0, "{refused}");
    stop(gw.child).await;
    let after = std::fs::read_to_string(wdir.join("checkpoint.note")).expect("witness state");
    assert_eq!(after, day2, "the witness must not cosign the restored log");
    let mut witness = witness;
    let _ = witness.child.kill().await;

}

/// A witness that is down never holds up a call; the gap shows in `/healthz` and the
/// publisher keeps retrying; the directory target still gets every checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_witness_never_blocks_calls_and_the_gap_shows_in_healthz() {
    let setup = Setup::with_demo();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let key = airlock::audit::SigningKey::generate().expect("key").public_key();
    let vkey = airlock::audit::VerifierKey::cosigner(airlock::audit::KeyName::new("down.test/w").expect("name"), key);
    std::fs::write(
        setup.config(),
        format!(
            "[gateway]\ndata_dir = \"data\"\n[audit.witness]\ninterval = \"100ms\"\ndir = \"published\"\n[[audit.witness.http]]\nurl = \"http://127.0.0.1:{port}\"\nkey = \"{vkey}\"\n"
        ),
    )
    .expect("config");
    let gw = calls(&setup, 5).await;
    let mut detail = Value::Null;
    for _ in 0..300 {
        detail = healthz_witness(&gw.url).await;
        let down = detail["targets"].as_array().into_iter().flatten().find(|t| t["target"].as_str().is_some_and(|n| n.contains(&port.to_string())));
        if down.is_some_and(|t| !t["last_error"].is_null() && !t["failing_since"].is_null() && t["unwitnessed_records"].as_u64() > Some(0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let targets = detail["targets"].as_array().cloned().unwrap_or_default();
    let down = targets.iter().find(|t| t["target"].as_str().is_some_and(|n| n.contains(&port.to_string()))).cloned().unwrap_or(Value::Null);
    assert!(!down["last_error"].is_null() && down["unwitnessed_records"].as_u64() > Some(0), "{detail}");
    stop(gw.child).await;
    let files = std::fs::read_dir(setup.path().join("published")).expect("published").count();
    assert!(files >= 1, "the directory target is published to while the HTTP witness is down");
    let latest = run(&["log", "checkpoint", "--data-dir", s(&setup.data_dir())]);
    let size = note_size(&stdout(&latest));
    let last = setup.path().join("published").join(format!("airlock-{size:020}.note"));
    assert_eq!(std::fs::read_to_string(&last).expect("the last checkpoint was published at shutdown"), stdout(&latest));
}
