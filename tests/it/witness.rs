//! Tamper evidence beyond the gateway's disk (issue 15): checkpoints as signed notes,
//! consistency proofs, `log verify --trusted`, a real `airlock witness serve` next to a
//! real gateway, and what `log verify` says about a damaged database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use airlock::audit::{AuditConfig, AuditLog, Record, RecordKind};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::util::{Setup, TestClient, airlock, call, eventually};

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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let mut damages: Vec<(String, Box<dyn Fn(&Path)>)> = Vec::new();
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
