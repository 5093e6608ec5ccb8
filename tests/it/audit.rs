//! The audit log through the real binary: tamper detection, redaction, export, proofs,
//! key rotation, and a library-level crash check.
//!
//! Logs are written with the library API, tampered with through sled directly (the gateway
//! must be stopped: sled locks its database), then checked with `airlock log …`. A group's
//! records are one sled key, `g` ‖ its last seq, each record framed as its length (u32 BE)
//! ‖ chain hash ‖ canonical bytes; `write_log` makes a group of every record.
//! The gateway-level crash test (SIGKILL under load) belongs here too: `run_airlock` and
//! `verify_dir` are the helpers it needs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock::audit::{AuditConfig, AuditLog, Durability, Record, RecordKind, Seq};
use serde_json::json;

/// Runs the built binary; on failure the caller's assertion prints this `Output`.
fn run_airlock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .env("AIRLOCK_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run airlock")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `airlock log verify --data-dir DIR [extra…]`.
fn verify_dir(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["log", "verify", "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_airlock(&args)
}

fn assert_verify_fails(dir: &Path, extra: &[&str], expected: &str) {
    let out = verify_dir(dir, extra);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(expected),
        "expected {expected:?} in\n{all}"
    );
}

fn assert_verify_ok(dir: &Path, extra: &[&str]) -> String {
    let out = verify_dir(dir, extra);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn config(dir: &Path) -> AuditConfig {
    let mut cfg = AuditConfig::new(dir);
    cfg.origin = "test.airlock".into();
    cfg.redact = vec!["/password".into()];
    cfg
}

fn call_record(i: u64) -> Record {
    Record::new(RecordKind::CallReceived)
        .principal("alice")
        .session("s-1")
        .call_id(format!("c-{i}"))
        .tool("fs__read_file")
        .risk("low")
}

/// Writes `n` records one group each (so record `i` is covered by checkpoint `i - 1`).
fn write_log(cfg: AuditConfig, n: u64) {
    runtime().block_on(async {
        let log = AuditLog::open(cfg).unwrap();
        for i in 1..=n {
            let recorded = log.append(call_record(i)).await.unwrap();
            assert_eq!(recorded.seq(), Seq::new(i));
        }
        log.close().await.unwrap();
    });
}

fn db_key(prefix: u8, n: u64) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Opens the stopped log's sled database for tampering.
fn with_db(dir: &Path, f: impl FnOnce(&sled::Db)) {
    let db = sled::open(dir.join("audit")).unwrap();
    f(&db);
    db.flush().unwrap();
}

fn fresh_log(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_log(config(dir.path()), n);
    dir
}

#[test]
fn intact_log_verifies_with_the_local_key_and_with_the_shown_public_key() {
    let dir = fresh_log(20);
    let ok = assert_verify_ok(dir.path(), &[]);
    assert!(ok.contains("records 1..=20"), "{ok}");
    let show = run_airlock(&["keys", "show", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let pubfile = dir.path().join("pub.txt");
    std::fs::write(&pubfile, &show.stdout).unwrap();
    assert_verify_ok(dir.path(), &["--pubkey", pubfile.to_str().unwrap()]);
}

#[test]
fn edited_byte_of_a_record_is_reported_with_its_seq() {
    let dir = fresh_log(20);
    with_db(dir.path(), |db| {
        let mut v = db.get(db_key(b'g', 7)).unwrap().unwrap().to_vec();
        let at = v.windows(5).position(|w| w == b"alice").unwrap();
        v[at] = b'A';
        db.insert(db_key(b'g', 7), v).unwrap();
    });
    assert_verify_fails(dir.path(), &[], "seq 7: edited");
}

#[test]
fn deleted_record_is_reported_missing_with_its_seq() {
    let dir = fresh_log(20);
    with_db(dir.path(), |db| {
        db.remove(db_key(b'g', 9)).unwrap();
    });
    assert_verify_fails(dir.path(), &[], "seq 9: missing");
}

#[test]
fn swapped_records_are_reported_reordered_at_the_first_of_them() {
    let dir = fresh_log(20);
    with_db(dir.path(), |db| {
        let a = db.get(db_key(b'g', 4)).unwrap().unwrap();
        let b = db.get(db_key(b'g', 11)).unwrap().unwrap();
        db.insert(db_key(b'g', 4), b).unwrap();
        db.insert(db_key(b'g', 11), a).unwrap();
    });
    assert_verify_fails(dir.path(), &[], "seq 4: reordered");
}

#[test]
fn truncated_tail_is_reported_at_the_first_lost_seq() {
    let dir = fresh_log(20);
    with_db(dir.path(), |db| {
        for seq in 18..=20 {
            db.remove(db_key(b'g', seq)).unwrap();
        }
    });
    assert_verify_fails(dir.path(), &[], "seq 18: truncated");
}

#[test]
fn a_group_cut_short_is_reported_at_its_first_unread_record() {
    let dir = fresh_log(20);
    with_db(dir.path(), |db| {
        let v = db.get(db_key(b'g', 12)).unwrap().unwrap();
        db.insert(db_key(b'g', 12), &v[..v.len() - 3]).unwrap();
    });
    assert_verify_fails(dir.path(), &[], "seq 12: malformed");
}

/// A log written with one sled key per record (before group keys) reads as it did, and
/// so does one that went on in groups after it.
#[test]
fn records_stored_one_key_each_still_verify_beside_groups() {
    let dir = fresh_log(20);
    with_db(dir.path(), |db| {
        for seq in 1..=10 {
            let group = db.remove(db_key(b'g', seq)).unwrap().unwrap();
            db.insert(db_key(b'r', seq), &group[4..]).unwrap();
        }
    });
    let ok = assert_verify_ok(dir.path(), &[]);
    assert!(ok.contains("records 1..=20 intact"), "{ok}");
    let out = run_airlock(&["log", "export", "--format", "jsonl", "--data-dir", dir.path().to_str().unwrap(), "--since", "9"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seqs: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("seq")?.as_u64())
        .collect();
    assert_eq!(seqs, (9..=20).collect::<Vec<_>>());
    with_db(dir.path(), |db| {
        db.remove(db_key(b'r', 5)).unwrap();
    });
    assert_verify_fails(dir.path(), &[], "seq 5: missing");
}

#[test]
fn truncated_tail_with_its_checkpoints_is_caught_by_the_checkpoint_file() {
    let dir = fresh_log(20);
    with_db(dir.path(), |db| {
        for seq in 18..=20 {
            db.remove(db_key(b'g', seq)).unwrap();
            db.remove(db_key(b'c', seq - 1)).unwrap();
        }
    });
    assert_verify_fails(dir.path(), &[], "seq 18: truncated");
}

#[test]
fn database_replaced_by_a_copy_signed_with_another_key_is_a_key_mismatch() {
    let dir = fresh_log(20);
    let forged = tempfile::tempdir().unwrap();
    write_log(config(forged.path()), 20);
    std::fs::remove_dir_all(dir.path().join("audit")).unwrap();
    copy_dir(&forged.path().join("audit"), &dir.path().join("audit"));
    assert_verify_fails(dir.path(), &[], "seq 1: key mismatch");
    // The forger's own checkpoints.log does not help: the trusted key still signed nothing.
    std::fs::copy(
        forged.path().join("checkpoints.log"),
        dir.path().join("checkpoints.log"),
    )
    .unwrap();
    assert_verify_fails(dir.path(), &[], "seq 1: key mismatch");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn redacted_secret_never_reaches_any_file_of_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2-s3cr3t-7f1d";
    runtime().block_on(async {
        let log = AuditLog::open(config(dir.path())).unwrap();
        for i in 0..50 {
            let args = json!({"path": format!("/tmp/{i}"), "password": secret});
            let rec = call_record(i).with_args(&args, log.redactor());
            let _ = log.append(rec).await.unwrap();
        }
        log.close().await.unwrap();
    });
    let mut scanned = 0;
    for file in all_files(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        scanned += bytes.len();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret found in {}",
            file.display()
        );
    }
    assert!(scanned > 0);
    let show = run_airlock(&[
        "log",
        "show",
        "3",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains(r#""password":"[redacted]""#) && shown.contains("args_hmac") && !shown.contains("args_sha256"),
        "{}",
        text(&show)
    );
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path))
        } else {
            out.push(path)
        }
    }
    out
}

fn pubkey_file(dir: &Path) -> PathBuf {
    let show = run_airlock(&["keys", "show", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let file = dir.join("trusted.pub");
    std::fs::write(&file, &show.stdout).unwrap();
    file
}

#[test]
fn export_verifies_without_the_database_and_an_edit_in_it_is_caught() {
    let dir = fresh_log(12);
    let pubkey = pubkey_file(dir.path());
    let export = dir.path().join("export.jsonl");
    let d = dir.path().to_str().unwrap();
    let out = run_airlock(&[
        "log",
        "export",
        "--format",
        "jsonl",
        "--data-dir",
        d,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::remove_dir_all(dir.path().join("audit")).unwrap();
    let args = [
        "log",
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--pubkey",
        pubkey.to_str().unwrap(),
    ];
    let out = run_airlock(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let edited = std::fs::read_to_string(&export)
        .unwrap()
        .replacen("c-5", "c-6", 1);
    std::fs::write(&export, edited).unwrap();
    let out = run_airlock(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("seq 5: edited"),
        "{}",
        text(&out)
    );
}

#[test]
fn partial_export_since_a_seq_verifies_on_its_own() {
    let dir = fresh_log(15);
    let pubkey = pubkey_file(dir.path());
    let export = dir.path().join("tail.jsonl");
    let d = dir.path().to_str().unwrap();
    let out = run_airlock(&[
        "log",
        "export",
        "--since",
        "9",
        "--data-dir",
        d,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run_airlock(&[
        "log",
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--pubkey",
        pubkey.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("records 9..=15"),
        "{}",
        text(&out)
    );
}

#[test]
fn inclusion_proof_checks_with_the_public_key_alone_and_fails_for_another_record() {
    let dir = fresh_log(13);
    let pubkey = pubkey_file(dir.path());
    let out = run_airlock(&[
        "log",
        "prove",
        "6",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let proof_file = dir.path().join("proof.json");
    std::fs::write(&proof_file, &out.stdout).unwrap();
    let check = [
        "log",
        "check-proof",
        proof_file.to_str().unwrap(),
        "--pubkey",
        pubkey.to_str().unwrap(),
    ];
    let ok = run_airlock(&check);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let forged = String::from_utf8_lossy(&out.stdout).replace("c-6", "c-66");
    std::fs::write(&proof_file, forged).unwrap();
    let bad = run_airlock(&check);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
}

#[test]
fn verification_follows_a_key_rotation_from_either_key() {
    let dir = fresh_log(5);
    let old_pub = pubkey_file(dir.path());
    let d = dir.path().to_str().unwrap();
    let out = run_airlock(&["keys", "rotate", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    write_log(config(dir.path()), 0);
    runtime().block_on(async {
        let log = AuditLog::open(config(dir.path())).unwrap();
        let r = log.append(call_record(99)).await.unwrap();
        assert_eq!(r.seq(), Seq::new(7)); // 5 calls, then the rotation record
        log.close().await.unwrap();
    });
    let ok = assert_verify_ok(dir.path(), &[]);
    assert!(ok.contains(" then "), "two keys expected: {ok}");
    assert_verify_ok(dir.path(), &["--pubkey", old_pub.to_str().unwrap()]);
    let shown = run_airlock(&["log", "show", "6", "--data-dir", d]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(r#""kind":"key_rotated""#),
        "{}",
        text(&shown)
    );
}

#[test]
fn log_commands_name_the_lock_while_a_writer_holds_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = rt.block_on(async {
        let log = AuditLog::open(config(dir.path())).unwrap();
        let _ = log.append(call_record(1)).await.unwrap();
        log
    });
    let out = verify_dir(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        text(&out)
    );
    rt.block_on(log.close()).unwrap();
    assert_verify_ok(dir.path(), &[]);
}

/// With callers queued, a group's sled inserts follow its acknowledgement (on the applier
/// thread): an acknowledged record must still be readable at once, and the durable-size
/// watch that followers wait on must never run ahead of what a reader finds.
#[test]
fn an_acknowledged_record_is_readable_at_once_and_the_durable_watch_never_runs_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.durability = Durability::None;
    runtime().block_on(async {
        let log = AuditLog::open(cfg).unwrap();
        let mut durable = log.durable();
        let watcher_log = log.clone();
        let watcher = tokio::spawn(async move {
            let mut seen = 0;
            while durable.changed().await.is_ok() {
                let n = *durable.borrow_and_update();
                let Ok(reader) = watcher_log.reader() else { break };
                let last = reader.last_seq().unwrap().get();
                assert!(last >= n, "the watch said {n} records, the database has {last}");
                seen = seen.max(n);
                if n >= 32 * 40 {
                    break;
                }
            }
            seen
        });
        let writers: Vec<_> = (0..32u64)
            .map(|w| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..40 {
                        let seq = log.append(call_record(w * 1000 + i)).await.unwrap().seq();
                        let bytes = log.reader().unwrap().get(seq).unwrap();
                        assert!(String::from_utf8(bytes).unwrap().contains(&format!("\"c-{}\"", w * 1000 + i)));
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        assert_eq!(watcher.await.unwrap(), 32 * 40, "the watch reached every record");
        log.close().await.unwrap();
    });
    assert_verify_ok(dir.path(), &[]);
}

#[test]
fn durability_none_still_writes_a_verifiable_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.durability = Durability::None;
    runtime().block_on(async {
        let log = AuditLog::open(cfg).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(call_record(i)).await.unwrap().seq() })
            })
            .collect();
        let mut seqs: Vec<u64> = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap().get());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
    assert_verify_ok(dir.path(), &[]);
}

/// Child half of the crash check: appends from 16 tasks and prints each acknowledged seq.
/// Runs only when the parent test starts it with `AIRLOCK_CRASH_CHILD_DIR` set.
#[test]
#[ignore = "helper process for sigkill_of_the_writer_loses_no_acknowledged_record"]
fn crash_child_appends_until_killed() {
    use std::io::Write;
    let Ok(dir) = std::env::var("AIRLOCK_CRASH_CHILD_DIR") else {
        return;
    };
    runtime().block_on(async {
        let log = AuditLog::open(config(Path::new(&dir))).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for w in 0..16u64 {
            let (log, tx) = (log.clone(), tx.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let seq = log
                        .append(call_record(w * 1_000_000 + i))
                        .await
                        .unwrap()
                        .seq();
                    let _ = tx.send(seq.get());
                }
            });
        }
        let mut out = std::io::stdout().lock();
        while let Some(seq) = rx.recv().await {
            writeln!(out, "{seq}").unwrap();
            out.flush().unwrap();
        }
    });
}

/// Library-level crash check: SIGKILL the writing process several times at arbitrary
/// moments; every sequence number it acknowledged must be in a log that verifies.
#[test]
fn sigkill_of_the_writer_loses_no_acknowledged_record() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut acked_max = 0u64;
    for round in 0..4u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "audit::crash_child_appends_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("AIRLOCK_CRASH_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wanted = 200 + round * 150;
        let mut seen = 0;
        while seen < wanted {
            let Some(Ok(line)) = lines.next() else { break };
            if let Ok(seq) = line.trim().parse::<u64>() {
                acked_max = acked_max.max(seq);
                seen += 1;
            }
        }
        assert!(seen == wanted, "child stopped early in round {round}");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let out = assert_verify_ok(dir.path(), &[]);
        let last: u64 = out
            .split("..=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            last >= acked_max,
            "acknowledged seq {acked_max} lost; log ends at {last}"
        );
    }
}

/// The journal is the durability point: every acknowledged record is in `audit.journal` when
/// the writer is killed (sled is not flushed per group), and the log verifies with all of them
/// after the groups sled lost are replayed on open.
#[test]
fn killed_writer_acknowledged_records_are_in_the_journal_and_come_back_from_it() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "audit::crash_child_appends_until_killed", "--ignored", "--nocapture", "--test-threads=1"])
        .env("AIRLOCK_CRASH_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked_max = 0u64;
    while acked_max < 200 {
        let Some(Ok(line)) = lines.next() else { break };
        acked_max = acked_max.max(line.trim().parse().unwrap_or(0));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(acked_max >= 200, "the child acknowledged only {acked_max} records");
    let journal = std::fs::read(dir.path().join("audit.journal")).expect("a journal next to the database");
    let needle = format!("\"seq\":{acked_max},");
    assert!(
        journal.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "acknowledged record {acked_max} is not in the journal"
    );
    let out = assert_verify_ok(dir.path(), &[]);
    let last: u64 = out.split("..=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(last >= acked_max, "acknowledged seq {acked_max} lost; log ends at {last}");
}

/// Opens a log whose deferred records wait `within` for a group to sign them, runs `body`
/// with it, then closes it; returns the log's directory.
fn with_deferring_log<F: std::future::Future<Output = ()>>(within: std::time::Duration, body: impl FnOnce(AuditLog) -> F) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.sign_within = within;
    runtime().block_on(async {
        let log = AuditLog::open(cfg).unwrap();
        body(log.clone()).await;
        log.close().await.unwrap();
    });
    dir
}

/// The records a call writes before it is forwarded (`append_all_sign_later`) are durable
/// at once and signed with the next group: one checkpoint for the call's two groups.
#[test]
fn a_forwarded_calls_first_group_is_signed_with_the_next_one() {
    let dir = with_deferring_log(std::time::Duration::from_secs(3600), async |log| {
        let first = log.append_all_sign_later(vec![call_record(1), call_record(2), call_record(3)]).await.unwrap();
        assert_eq!(first.iter().map(|r| r.seq().get()).collect::<Vec<_>>(), [1, 2, 3]);
        let reader = log.reader().unwrap();
        assert!(reader.checkpoints().unwrap().is_empty(), "signed before the next group");
        let mut export = Vec::new();
        assert_eq!(reader.export(Seq::new(1), &mut export).unwrap(), 0, "an export holds only signed records");
        let _recorded = log.append(call_record(4)).await.unwrap();
        let checkpoints = reader.checkpoints().unwrap();
        assert_eq!(checkpoints.iter().map(|c| c.size).collect::<Vec<_>>(), [4], "one checkpoint for both groups");
    });
    let ok = assert_verify_ok(dir.path(), &[]);
    assert!(ok.contains("records 1..=4 intact, 1 checkpoints"), "{ok}");
}

/// With nothing written after them, deferred records are signed when their deadline
/// passes, without closing the log.
#[test]
fn deferred_records_are_signed_at_their_deadline_when_no_group_follows() {
    let dir = with_deferring_log(std::time::Duration::from_millis(1), async |log| {
        log.append_all_sign_later(vec![call_record(1), call_record(2)]).await.unwrap();
        let reader = log.reader().unwrap();
        let mut signed = false;
        for _ in 0..1000 {
            if reader.checkpoints().unwrap().last().is_some_and(|c| c.size == 2) {
                signed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(signed, "the deadline never signed the deferred records");
    });
    let ok = assert_verify_ok(dir.path(), &[]);
    assert!(ok.contains("records 1..=2 intact, 1 checkpoints"), "{ok}");
}

/// Closing the log signs what is deferred: a clean stop leaves nothing unsigned.
#[test]
fn closing_the_log_signs_its_deferred_records() {
    let dir = with_deferring_log(std::time::Duration::from_secs(3600), async |log| {
        let _recorded = log.append(call_record(1)).await.unwrap();
        log.append_all_sign_later(vec![call_record(2), call_record(3)]).await.unwrap();
    });
    let out = verify_dir(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("records 1..=3 intact, 2 checkpoints"), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not signed yet"), "{}", text(&out));
}

/// Records past the last checkpoint that do not continue the chain are tampering, not a
/// deferred group: the unsigned tail is checked like the rest of the log.
#[test]
fn an_edited_unsigned_tail_is_reported_edited() {
    let dir = tempfile::tempdir().unwrap();
    write_log(config(dir.path()), 3);
    with_db(dir.path(), |db| {
        // A fourth record that claims a chain it does not continue.
        let record = br#"{"kind":"call_received","seq":4}"#;
        let mut value = (record.len() as u32).to_be_bytes().to_vec();
        value.extend_from_slice(&[0u8; 32]);
        value.extend_from_slice(record);
        db.insert(db_key(b'g', 4), value).unwrap();
    });
    assert_verify_fails(dir.path(), &[], "edited");
}

/// Checks against `tests/vectors/*.json`, written by `tests/vectors/gen.py` (independent
/// Python; never regenerate them with Airlock).
mod vectors {
    use airlock::audit::{
        ArgsKey, Checkpoint, PublicKey, Record, RecordKind, Redactor, Sha256Digest, Signature, canonical,
        inclusion_proof, leaf_hash, root_of, signed_message, verify_inclusion,
    };
    use serde_json::Value;

    fn load(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn s(v: &Value) -> &str {
        v.as_str().unwrap()
    }

    fn digest(v: &Value) -> Sha256Digest {
        s(v).parse().unwrap()
    }

    #[test]
    fn canonical_json_matches_the_independent_vectors() {
        let data = load("canonical.json");
        for case in data["cases"].as_array().unwrap() {
            let input: Value = serde_json::from_str(s(&case["input"])).unwrap();
            let out = canonical(&input);
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                s(&case["canonical"]),
                "input {}",
                case["input"]
            );
            assert_eq!(Sha256Digest::of(&out), digest(&case["sha256"]));
        }
    }

    #[test]
    fn record_with_redacted_args_matches_the_independent_vector() {
        let data = load("record.json");
        let pointers: Vec<String> = serde_json::from_value(data["redact"].clone()).unwrap();
        let redactor = Redactor::new(&pointers, ArgsKey::generate().unwrap()).unwrap();
        // The vector is a record from before keyed digests (plain `args_sha256`): it must
        // still read, redact and serialise exactly as the independent script wrote it.
        let mut expected: Record = serde_json::from_value(data["record"].clone()).unwrap();
        assert_eq!(expected.args, Some(redactor.redact(&data["args"])));
        assert_eq!(expected.args_sha256, Some(Sha256Digest::of(&canonical(&data["args"]))));
        expected.result_sha256 = None;
        let rebuilt = expected.with_result(&data["result"]);
        assert_eq!(
            String::from_utf8(rebuilt.to_canonical()).unwrap(),
            s(&data["canonical"])
        );
        // New records carry the keyed digest instead, never the plain one.
        let new = Record::new(RecordKind::CallReceived).with_args(&data["args"], &redactor);
        assert!(new.args_sha256.is_none() && new.args_hmac.is_some());
    }

    #[test]
    fn hash_chain_and_merkle_roots_match_the_independent_vectors() {
        let data = load("chain.json");
        let mut head = Sha256Digest::from_bytes([0; 32]);
        let mut leaves = Vec::new();
        for step in data["steps"].as_array().unwrap() {
            let bytes = s(&step["record"]).as_bytes();
            let record: Value = serde_json::from_slice(bytes).unwrap();
            assert_eq!(canonical(&record), bytes, "stored form is canonical");
            head = Sha256Digest::of_parts(&[head.as_bytes(), bytes]);
            assert_eq!(head, digest(&step["chain_hash"]));
            leaves.push(leaf_hash(bytes));
            assert_eq!(leaves.last().copied().unwrap(), digest(&step["leaf_hash"]));
        }
        for (n, root) in data["roots"].as_array().unwrap().iter().enumerate() {
            assert_eq!(root_of(&leaves[..n]), digest(root), "size {n}");
        }
    }

    #[test]
    fn rfc6962_roots_and_inclusion_proofs_match_the_independent_vectors() {
        let data = load("merkle.json");
        let leaves: Vec<Sha256Digest> = data["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| leaf_hash(s(l).as_bytes()))
            .collect();
        let roots: Vec<Sha256Digest> = data["roots"]
            .as_array()
            .unwrap()
            .iter()
            .map(digest)
            .collect();
        for (n, root) in roots.iter().enumerate() {
            assert_eq!(root_of(&leaves[..n]), *root, "size {n}");
        }
        let proofs = data["proofs"].as_array().unwrap();
        assert!(proofs.len() > 50);
        for p in proofs {
            let (m, n) = (
                p["index"].as_u64().unwrap() as usize,
                p["size"].as_u64().unwrap() as usize,
            );
            let path: Vec<Sha256Digest> =
                p["path"].as_array().unwrap().iter().map(digest).collect();
            assert_eq!(
                inclusion_proof(&leaves[..n], m).unwrap(),
                path,
                "index {m} size {n}"
            );
            assert!(verify_inclusion(
                &leaves[m], m as u64, n as u64, &path, &roots[n]
            ));
        }
    }

    #[test]
    fn rfc9162_consistency_proofs_match_the_independent_vectors() {
        let merkle = load("merkle.json");
        let leaves: Vec<Sha256Digest> =
            merkle["leaves"].as_array().unwrap().iter().map(|l| leaf_hash(s(l).as_bytes())).collect();
        let roots: Vec<Sha256Digest> = merkle["roots"].as_array().unwrap().iter().map(digest).collect();
        let data = load("consistency.json");
        let proofs = data["proofs"].as_array().unwrap();
        assert!(proofs.len() > 70);
        for p in proofs {
            let (m, n) = (p["old_size"].as_u64().unwrap() as usize, p["new_size"].as_u64().unwrap() as usize);
            let proof: Vec<Sha256Digest> = p["proof"].as_array().unwrap().iter().map(digest).collect();
            assert_eq!(airlock::audit::consistency_proof(&leaves[..n], m).unwrap(), proof, "{m} -> {n}");
            assert!(airlock::audit::verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &proof));
            assert!(!airlock::audit::verify_consistency(m as u64, n as u64, &roots[m], &roots[m], &proof));
        }
    }

    #[test]
    fn checkpoint_note_made_by_independent_code_verifies() {
        let data = load("note.json");
        let vkey = airlock::audit::VerifierKey::parse(s(&data["verifier_key"])).unwrap();
        let note = airlock::audit::Note::parse(s(&data["note"])).unwrap();
        assert_eq!(note.verify(&vkey), Some(true));
        let cp = Checkpoint::from_note(&note, &[vkey.key]).unwrap();
        assert_eq!(cp.size, 7);
        assert_eq!(cp.chain_head.to_string(), s(&data["chain_head"]));
        assert_eq!(cp.to_note().unwrap().to_string(), s(&data["note"]));
        let chain = load("chain.json");
        assert_eq!(cp.root, digest(&chain["roots"][7]));
    }

    #[test]
    fn checkpoint_signature_made_by_independent_ed25519_verifies() {
        let data = load("checkpoint.json");
        let key = PublicKey::parse(s(&data["public_key"])).unwrap();
        assert_eq!(key.id().to_string(), s(&data["key_id"]));
        let cp = Checkpoint::from_slice(s(&data["checkpoint"]).as_bytes()).unwrap();
        let msg = signed_message(&cp.origin, cp.size, &cp.root, &cp.chain_head, &cp.time);
        assert_eq!(
            String::from_utf8(msg.clone()).unwrap(),
            s(&data["signed_message"])
        );
        assert!(key.verify(&msg, &Signature::parse(s(&data["signature"])).unwrap()));
        assert!(cp.signature_is_valid() && cp.key == key);
        assert_eq!(
            String::from_utf8(cp.to_canonical()).unwrap(),
            s(&data["checkpoint"])
        );
        let chain = load("chain.json");
        assert_eq!(cp.root, digest(&chain["roots"][7]));
    }
}
