//! The dependency rules of ARCHITECTURE.md, checked on the source: `audit` and `risk`
//! depend on nothing else of ours, `identity` neither, and pipeline modules never reach
//! into the CLI.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// Every `crate::<module>` a file refers to.
fn crate_uses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let name: String = rest[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        found.push(name);
        rest = &rest[at + 7..];
    }
    found
}

fn check(module: &str, allowed: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = if src.join(module).is_dir() { rust_files(&src.join(module)) } else { vec![src.join(format!("{module}.rs"))] };
    let mut violations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for used in crate_uses(&text) {
            if !used.is_empty() && used != module && !allowed.contains(&used.as_str()) {
                violations.push(format!("{} uses crate::{used}", file.display()));
            }
        }
    }
    violations
}

#[test]
fn audit_and_risk_and_identity_depend_on_nothing_of_ours() {
    let mut violations = check("audit", &[]);
    violations.extend(check("risk", &[]));
    violations.extend(check("identity", &[]));
    violations.extend(check("text", &[]));
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn pipeline_modules_never_use_the_cli() {
    let mut violations = Vec::new();
    for module in ["gateway", "downstream", "policy", "http", "config", "manifest", "demo_tools"] {
        violations.extend(check(module, &["audit", "risk", "identity", "policy", "downstream", "gateway", "manifest", "config", "http"]));
    }
    let cli: Vec<_> = violations.into_iter().filter(|v| v.ends_with("crate::cli")).collect();
    assert!(cli.is_empty(), "{cli:#?}");
}

#[test]
fn telemetry_imports_only_the_audit_observer() {
    let violations: Vec<_> = check("telemetry", &["audit"]);
    assert!(violations.is_empty(), "telemetry is a sink the other modules call: {violations:#?}");
}

#[test]
fn downstream_does_not_decide_or_record() {
    // `telemetry` only counts (its hooks take names and closed sets, and it imports no module but `audit`).
    let violations: Vec<_> = check("downstream", &["manifest", "risk", "telemetry"]);
    assert!(violations.is_empty(), "downstream must not reach policy, audit or gateway: {violations:#?}");
}

#[test]
fn approval_never_reaches_into_gateway_http_or_the_cli() {
    // `storage`: the PostgreSQL pool its shared store runs on (a backend, not a transport).
    let violations: Vec<_> = check("approval", &["audit", "identity", "policy", "risk", "storage", "text", "telemetry"]);
    assert!(violations.is_empty(), "channels depend on the broker, and approval on no transport: {violations:#?}");
}

#[test]
fn the_audit_view_reads_and_renders_but_reaches_no_pipeline() {
    let violations: Vec<_> = check("audit_view", &["approval", "audit", "identity", "policy", "report", "text"]);
    assert!(violations.is_empty(), "the audit view uses the page's sessions, the log and the report only: {violations:#?}");
}
