//! `airlock report` on the log of a real demo run: the figures match the log, the HTML is
//! self-contained and escaped, a tampered log says so on top and exits 1, and the PDF
//! (printed by headless Chromium, when installed) holds the totals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::airlock;

/// Runs the demo from a copy of the shipped files; returns the directory and its data dir.
fn demo_log() -> (tempfile::TempDir, PathBuf) {
    let dir = crate::util::shipped_copy();
    let out = Command::new(airlock())
        .args(["demo", "--expire-after", "2s", "--config"])
        .arg(dir.path().join("airlock.toml"))
        .output()
        .expect("run airlock demo");
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let data = dir.path().join("airlock-data");
    (dir, data)
}

fn report(data: &Path, args: &[&str]) -> Output {
    Command::new(airlock()).arg("report").arg("--data-dir").arg(data).args(args).output().expect("run airlock report")
}

#[test]
fn the_report_of_the_demo_has_the_logs_figures_and_who_approved_what() {
    let (_dir, data) = demo_log();
    let out = report(&data, &["--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    assert_eq!(e["format"], "airlock-report/v1");
    assert_eq!(e["verification"]["status"], "intact", "{}", e["verification"]);
    // The demo's four calls: read allowed, export approved by dana, delete denied,
    // migration expired.
    assert_eq!(e["totals"]["calls"], 4, "{}", e["totals"]);
    assert_eq!(e["totals"]["by_decision"]["allow"], 1);
    assert_eq!(e["totals"]["by_decision"]["approve"], 2);
    assert_eq!(e["totals"]["by_decision"]["deny"], 1);
    assert_eq!(e["totals"]["by_principal"]["agent"], 4);
    let approvals = e["approvals"].as_array().expect("approvals");
    assert_eq!(approvals.len(), 2, "{approvals:?}");
    let export = approvals.iter().find(|a| a["tool"] == "demo__export_customers").expect("export hold");
    assert_eq!(export["outcome"], "approved");
    assert_eq!(export["votes"][0]["approver"], "dana");
    assert_eq!(export["votes"][0]["channel"], "api");
    assert!(export["seconds_to_decision"].as_f64().is_some());
    let kinds: Vec<&str> = export["chain"].as_array().expect("chain").iter().filter_map(|c| c[1].as_str()).collect();
    for kind in ["call_received", "decision", "approval_requested", "approval_decided", "approval_settled", "call_forwarded", "call_completed"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let migration = approvals.iter().find(|a| a["tool"] == "demo__run_migration").expect("migration hold");
    assert_eq!(migration["outcome"], "expired");
    assert_eq!(migration["quorum"], 2);
    // The figures match the log's own records.
    let export_log = Command::new(airlock()).args(["log", "export", "--data-dir"]).arg(&data).output().expect("export");
    let decisions = String::from_utf8_lossy(&export_log.stdout).lines().filter(|l| l.contains("\"kind\":\"decision\"")).count();
    assert_eq!(e["totals"]["calls"].as_u64(), Some(decisions as u64));
    // A period without the demo's day has nothing in it.
    let empty = report(&data, &["--format", "json", "--from", "2020-01-01", "--to", "2020-01-31"]);
    let empty: Value = serde_json::from_slice(&empty.stdout).expect("report JSON");
    assert_eq!(empty["totals"]["calls"], 0);
}

#[test]
fn the_html_report_is_self_contained_and_a_tampered_log_fails_on_top_with_exit_1() {
    let (dir, data) = demo_log();
    let html_file = dir.path().join("report.html");
    let out = report(&data, &["--out", html_file.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&html_file).expect("html");
    assert!(html.contains("Log verified: intact"));
    assert!(html.contains("dana approve (api)"), "who approved is not shown");
    assert!(html.contains("<svg"), "no chart");
    assert!(!html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"), "outside assets or scripts");

    // Alter one record (a stopped log's database, as an attacker with the disk would).
    let seq;
    {
        let db = sled::open(data.join("audit")).expect("open db");
        // A group: `g` ‖ its last seq → records framed as length (u32 BE) ‖ chain hash ‖ bytes.
        let (key, value) = db
            .scan_prefix([b'g'])
            .filter_map(Result::ok)
            .find(|(_, v)| v.windows(7).any(|w| w == b"\"agent\""))
            .expect("a record naming the agent");
        let mut value = value.to_vec();
        let at = value.windows(5).position(|w| w == b"agent").expect("principal in record");
        value[at] = b'A';
        db.insert(&key, value.as_slice()).expect("insert");
        db.flush().expect("flush");
        let mut frames = Vec::new();
        let mut start = 0;
        while start < value.len() {
            let len = u32::from_be_bytes(value[start..start + 4].try_into().expect("frame")) as usize;
            frames.push(start);
            start += 4 + 32 + len;
        }
        let last = u64::from_be_bytes(key[1..9].try_into().expect("key"));
        let edited = frames.iter().rposition(|&f| f <= at).expect("a frame");
        seq = last - (frames.len() - 1 - edited) as u64;
    }
    let out = report(&data, &["--out", html_file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "a tampered log's report exited {:?}", out.status);
    let html = std::fs::read_to_string(&html_file).expect("html");
    let failed = html.find("LOG VERIFICATION FAILED").expect("the failure is shown");
    assert!(failed < html.find("<h2>").expect("sections"), "the failure is not the first thing on the page");
    assert!(html.contains(&format!("seq {seq}")), "the failing record is not named");
}

#[test]
fn the_pdf_report_holds_the_totals() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).is_file());
    let pdftotext = Path::new("/usr/bin/pdftotext").is_file();
    let (Some(chromium), true) = (chromium, pdftotext) else {
        eprintln!("SKIPPED the_pdf_report_holds_the_totals: needs chromium and pdftotext (tests/interop/run installs them)");
        return;
    };
    let (dir, data) = demo_log();
    let pdf = dir.path().join("report.pdf");
    let out = Command::new(airlock())
        .env("AIRLOCK_CHROMIUM", chromium)
        .args(["report", "--format", "pdf", "--out"])
        .arg(&pdf)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("report pdf");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = Command::new("pdftotext").arg(&pdf).arg("-").output().expect("pdftotext");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Log verified: intact"), "{text}");
    assert!(text.contains("4 calls decided"), "{text}");
    assert!(text.contains("dana"), "{text}");
}

#[test]
fn serve_started_on_a_terminal_says_it_waits_for_an_mcp_client_and_piped_it_does_not() {
    let setup = crate::util::Setup::enforcing();
    let command = format!("{} serve --config {}", airlock(), setup.config().display());
    if !Path::new("/usr/bin/script").is_file() {
        eprintln!("SKIPPED serve_started_on_a_terminal…: needs util-linux `script` for a pty");
        return;
    }
    // `script` gives the gateway a terminal; it exits when the terminal's input ends.
    let tty = Command::new("/usr/bin/script").args(["-qec", &command, "/dev/null"]).stdin(std::process::Stdio::null()).output().expect("script");
    let seen = String::from_utf8_lossy(&tty.stdout);
    assert!(seen.contains("waiting for an MCP client") && seen.contains("Client configuration"), "{seen}");
    let piped = Command::new(airlock()).args(["serve", "--config"]).arg(setup.config()).stdin(std::process::Stdio::null()).output().expect("serve");
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("waiting for an MCP client"));
    assert!(piped.stdout.is_empty(), "stdout carries only protocol");
}
