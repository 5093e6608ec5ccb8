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
