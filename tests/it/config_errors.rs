//! `airlock check` through the real binary: every problem names file, line and key, and
//! every shipped configuration passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn airlock(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .current_dir(dir)
        .env_remove("AIRLOCK_LOG")
        .output()
        .expect("run airlock")
}

/// Runs `airlock check` and returns (exit code, stdout); prints everything on failure.
fn check(config: &Path, dir: &Path) -> (i32, String) {
    let out = airlock(&["check", "--config", &config.to_string_lossy()], dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("airlock check --config {}\nstdout:\n{stdout}\nstderr:\n{stderr}", config.display());
    (out.status.code().unwrap_or(-1), stdout)
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_typo_in_airlock_toml_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("airlock.toml"), "[gateway]\nseparator = \"__\"\n\n[audit]\ndurabilty = \"fsync\"\n");
    let (code, stdout) = check(Path::new("airlock.toml"), dir.path());
    assert_eq!(code, 1);
    assert_eq!(stdout.trim(), "airlock.toml:5: key \"durabilty\" is not known (did you mean \"durability\"?)");
}

#[test]
fn one_check_reports_problems_in_config_manifests_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("airlock.toml"), "[approvals]\ntimeout = \"forever\"\n[http]\nlisen = \"127.0.0.1:1\"\n");
    write(&d.join("tool-manifests/fs.toml"), "command = \"npx\"\n[tools.write_file]\nrisk = \"hihg\"\n");
    write(
        &d.join("policies/a.toml"),
        "[[rule]]\nid = \"x\"\neffect = \"approve\"\nquorum = 0\n\n[[rule]]\nid = \"y\"\neffect = \"deny\"\nwhen = { \"/p\" = { regx = \"^/etc\" } }\n\n[[rule]]\nid = \"z\"\neffect = \"allow\"\n",
    );
    write(&d.join("policies/b.toml"), "[[rule]]\nid = \"z\"\neffect = \"allow\"\n");
    let (code, stdout) = check(Path::new("airlock.toml"), d);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    let want = [
        "airlock.toml:2: key \"approvals.timeout\": \"forever\" is not a duration",
        "airlock.toml:4: key \"lisen\" is not known (did you mean \"listen\"?)",
        "tool-manifests/fs.toml:3: key \"tools.write_file.risk\": \"hihg\" is not a known value (did you mean \"high\"?)",
        "policies/a.toml:4: rule \"x\": quorum must be between 1 and 100",
        "policies/a.toml:9: key \"regx\" is not known (did you mean \"regex\"?)",
        "policies/b.toml:1: rule \"z\": id already used at policies/a.toml:11",
    ];
    assert_eq!(lines.len(), want.len(), "{lines:#?}");
    for (line, want) in lines.iter().zip(want) {
        assert!(line.starts_with(want), "{line:?} should start with {want:?}");
    }
}

#[test]
fn a_valid_setup_passes_with_a_one_line_summary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("conf/airlock.toml"), "[gateway]\npolicies = \"rules\"\n");
    write(&d.join("conf/tool-manifests/web.toml"), "url = \"http://127.0.0.1:3001/mcp\"\n");
    write(&d.join("conf/rules/r.toml"), "[[rule]]\nid = \"a\"\nrisk = [\"low\"]\neffect = \"allow\"\n");
    let (code, stdout) = check(Path::new("conf/airlock.toml"), d);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "conf/airlock.toml: ok; 1 tool manifest (web); 1 rule in 1 policy file");
}

#[test]
fn a_configured_directory_that_does_not_exist_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("airlock.toml"), "[gateway]\npolicies = \"polcies\"\n");
    let (code, stdout) = check(Path::new("airlock.toml"), dir.path());
    assert_eq!(code, 1);
    assert!(stdout.starts_with("airlock.toml:2: key \"gateway.policies\": directory"), "{stdout}");
}

#[test]
fn a_missing_config_file_means_check_could_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = airlock(&["check", "--config", "nope.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("airlock: cannot read nope.toml"));
}

#[test]
fn without_a_config_file_check_uses_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout) = {
        let out = airlock(&["check"], dir.path());
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("built-in defaults: ok; 0 tool manifests"), "{stdout}");
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Everything that ships is loaded by the code behind `airlock check`: the default config
/// (with `tool-manifests/` and `policies/`) and every example.
#[test]
fn every_shipped_config_manifest_and_policy_passes_check() {
    let mut configs = vec![repo().join("airlock.toml")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    examples.sort();
    assert!(!examples.is_empty());
    for example in &examples {
        let config = example.join("airlock.toml");
        assert!(config.is_file(), "{} has no airlock.toml", example.display());
        configs.push(config);
        // Every TOML file of an example sits where its config looks for it.
        for sub in std::fs::read_dir(example).unwrap().map(|e| e.unwrap().path()) {
            let name = sub.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                ["airlock.toml", "tool-manifests", "policies", "README.md"].contains(&name.as_str()),
                "unexpected {} (not loaded by any check)",
                sub.display()
            );
        }
    }
    for config in configs {
        let (code, stdout) = check(&config, &repo());
        assert_eq!(code, 0, "{}: {stdout}", config.display());
    }
    let (_, stdout) = check(&repo().join("airlock.toml"), &repo());
    assert!(stdout.contains("1 tool manifest (demo)"), "{stdout}");
}
