//! Inputs that once crashed a fuzz target (`fuzz/regressions/<target>/`), fed to the real
//! binary the way an outsider would hand them over. Each must get a clear refusal, never a
//! panic. `fuzz/run` also replays them as part of each target's corpus.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The test-vector public key (tests/vectors/checkpoint.json), which the `audit_export`
/// target trusts.
const VECTOR_PUBLIC_KEY: &str = "wwwaV0IgDCBcBxDLOlOsZDOdd/0BzpMtyxz35s9aem0=";

fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs in {}", dir.display());
    files
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .env("AIRLOCK_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run airlock")
}

fn describe(input: &Path, out: &Output) -> String {
    format!(
        "{}: status {:?}\n--- stdout\n{}--- stderr\n{}",
        input.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn crashing_exports_are_refused_by_log_verify_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let pubkey = dir.path().join("vector.pub");
    std::fs::write(&pubkey, VECTOR_PUBLIC_KEY).unwrap();
    for input in regressions("audit_export") {
        let out = run(&[
            "log",
            "verify",
            "--export",
            input.to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&input, &out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("malformed"), "{}", describe(&input, &out));
    }
}

/// `fuzz/regressions/audit_journal/`: journals whose entries claim a payload far past the end
/// of the file (a torn write, or a file someone wrote). The replay on open read the length
/// before the checksum could vouch for it and allocated it, up to 4 GiB; where that much
/// memory is not to be had the allocation fails and aborts the process opening the log.
/// Under a 3 GiB address-space limit (a small machine), `airlock log verify` must read such
/// an entry as the torn end of the journal and verify the log.
#[test]
fn journal_entries_claiming_more_than_the_file_are_torn_not_allocated() {
    use airlock::audit::{AuditConfig, AuditLog, Record, RecordKind};
    let shell = Command::new("sh").args(["-c", "ulimit -v 3145728"]).output();
    if !shell.is_ok_and(|out| out.status.success()) {
        eprintln!("SKIPPED journal_entries_claiming_more_than_the_file_are_torn_not_allocated: no `sh` with `ulimit -v`");
        return;
    }
    for input in regressions("audit_journal") {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
            for i in 0..3 {
                let _durable = log.append(Record::new(RecordKind::CallReceived).principal("alice").call_id(format!("c-{i}"))).await.unwrap();
            }
            log.close().await.unwrap();
        });
        // The closed log's journal header (its base), then the input's entries (the target's
        // input is a mode byte, a stored count, then a whole journal).
        let path = dir.path().join("audit.journal");
        let mut journal = std::fs::read(&path).unwrap();
        let bytes = std::fs::read(&input).unwrap();
        journal.truncate(64);
        journal.extend_from_slice(&bytes[2 + 64..]);
        std::fs::write(&path, &journal).unwrap();
        let out = Command::new("sh")
            .args(["-c", "ulimit -v 3145728 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_airlock")])
            .args(["log", "verify", "--data-dir", dir.path().to_str().unwrap()])
            .env("AIRLOCK_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run airlock");
        assert_eq!(out.status.code(), Some(0), "{}", describe(&input, &out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("records 1..="), "{}", describe(&input, &out));
    }
}
