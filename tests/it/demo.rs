//! `airlock demo` from a copy of the shipped configuration, as a newcomer runs it.

use std::process::Command;

use crate::util::airlock;

#[test]
fn the_demo_tells_the_whole_story_and_its_log_verifies() {
    let dir = crate::util::shipped_copy();
    let out = Command::new(airlock())
        .args(["demo", "--expire-after", "2s", "--config"])
        .arg(dir.path().join("airlock.toml"))
        .output()
        .expect("run airlock demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let row = |tool: &str| stdout.lines().find(|l| l.contains(tool) && l.trim_start().starts_with(char::is_numeric)).unwrap_or_default().to_owned();
    assert!(row("demo__read_customer").contains("allow") && row("demo__read_customer").contains("ran"), "{stdout}");
    assert!(row("demo__export_customers").contains("approved by dana, ran"), "{stdout}");
    assert!(row("demo__delete_bucket").contains("deny (never-delete-prod-buckets)"), "{stdout}");
    assert!(row("demo__run_migration").contains("expired"), "{stdout}");
    assert!(stdout.contains("airlock log verify: intact"), "{stdout}");
    assert!(stdout.contains("signed by the log key (approvers: dana)"), "{stdout}");
    // The denied delete never reached the sandbox; the approved export did.
    let sandbox = dir.path().join("airlock-data/sandbox");
    assert!(sandbox.join("buckets/prod-customers").is_dir());
    assert!(sandbox.join("exports/partner-analytics").exists());
    // And the log verifies with the standalone command too.
    let verify = Command::new(airlock()).args(["log", "verify", "--data-dir"]).arg(dir.path().join("airlock-data")).output().expect("verify");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}
