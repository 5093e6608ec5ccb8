//! Cluster mode, the log: replicas of `airlock serve --http` sharing one PostgreSQL log
//! (issue 18). Every test needs the test server of `.ci/run` (`AIRLOCK_TEST_PG_URL`) and
//! says SKIPPED without it (fails under CI).

use crate::util::*;

/// The helper gives a test a database of its own, reachable, and drops it afterwards.
#[tokio::test]
async fn each_test_gets_a_fresh_database() {
    let Some(db) = TestDb::create("fresh_database").await else { return };
    assert_eq!(db.query("SELECT current_database()").await, vec![db.name.clone()]);
    assert!(db.query("SELECT to_regclass('audit_head')::text").await.iter().all(String::is_empty));
}

fn check(setup: &Setup, env: &[(&str, &str)], extra: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(airlock())
        .arg("check")
        .arg("--config")
        .arg(setup.config())
        .args(extra)
        .env_remove("AIRLOCK_TEST_DB_URL")
        .envs(env.iter().copied())
        .output()
        .expect("run airlock check");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `[storage]` is validated with file:line errors like every section.
#[test]
fn a_wrong_storage_section_is_refused_with_its_line() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n\n[storage]\nbackend = \"mysql\"\n");
    let (ok, out, _) = check(&setup, &[], &[]);
    assert!(!ok);
    assert!(out.contains("airlock.toml:5:") && out.contains("must be \"sled\" or \"postgres\""), "{out}");
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n\n[storage]\nbackend = \"postgres\"\n");
    let (ok, out, _) = check(&setup, &[], &[]);
    assert!(!ok);
    assert!(out.contains("airlock.toml:4:") && out.contains("needs the key \"url_env\""), "{out}");
    let setup = Setup::new("[storage]\nbackend = \"postgres\"\nurl_env = \"not a name\"\npool_size = 0\n");
    let (ok, out, _) = check(&setup, &[], &[]);
    assert!(!ok);
    assert!(out.contains("airlock.toml:3:") && out.contains("not an environment variable name"), "{out}");
    assert!(out.contains("airlock.toml:4:") && out.contains("storage.pool_size"), "{out}");
}

/// `airlock check --connect` reaches the database and says so, without changing it; an
/// unreachable one fails the check; the URL (with its password) is never printed.
#[tokio::test]
async fn check_connect_reaches_the_database_and_says_so() {
    let Some(db) = TestDb::create("check_connect").await else { return };
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n\n[storage]\nbackend = \"postgres\"\nurl_env = \"AIRLOCK_TEST_DB_URL\"\n");
    let (ok, out, err) = check(&setup, &[("AIRLOCK_TEST_DB_URL", &db.url)], &["--connect"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("storage: postgres at postgres://127.0.0.1:") && out.contains("reachable; schema version 0 of"), "{out}");
    assert!(db.query("SELECT to_regclass('schema_migrations')::text").await.iter().all(String::is_empty), "check changed the database");
    // Unset: a warning without --connect, a failure with it.
    let (ok, _, err) = check(&setup, &[], &[]);
    assert!(ok && err.contains("AIRLOCK_TEST_DB_URL, which is not set"), "{err}");
    let (ok, out, _) = check(&setup, &[], &["--connect"]);
    assert!(!ok && out.contains("FAILED") && out.contains("is not set"), "{out}");
    // Nobody listens on port 1; the password in the URL must not appear.
    let (ok, out, err) = check(&setup, &[("AIRLOCK_TEST_DB_URL", "postgres://u:hunter2secret@127.0.0.1:1/x")], &["--connect"]);
    assert!(!ok && out.contains("storage: FAILED: the database is unreachable"), "{out}");
    assert!(!out.contains("hunter2secret") && !err.contains("hunter2secret"), "{out}{err}");
}

/// Replicas starting together apply each migration once (the advisory lock), and a
/// database migrated further than this build knows is refused.
#[tokio::test]
async fn migrations_apply_once_under_the_advisory_lock() {
    let Some(db) = TestDb::create("migrations_once").await else { return };
    let pools: Vec<_> = (0..4).map(|_| airlock::storage::PgPool::from_url(&db.url, "TEST", 2).expect("pool")).collect();
    let runs = pools.iter().map(|p| p.migrate());
    let applied: usize = futures::future::join_all(runs).await.into_iter().map(|r| r.expect("migrate")).sum();
    assert_eq!(applied, airlock::storage::migrations::MIGRATIONS.len());
    let versions = db.query("SELECT count(*) FROM schema_migrations").await;
    assert_eq!(versions, vec![airlock::storage::migrations::MIGRATIONS.len().to_string()]);
    db.query("INSERT INTO schema_migrations (version, name) VALUES (999999, 'from the future')").await;
    let err = pools[0].migrate().await.expect_err("a newer schema is refused").to_string();
    assert!(err.contains("999999") && err.contains("upgrade"), "{err}");
}

const REPLICA: &str = "[gateway]\ndata_dir = \"data\"\n\n[storage]\nbackend = \"postgres\"\nurl_env = \"AIRLOCK_TEST_DB_URL\"\n";

/// One replica's files: its own data dir and config, the demo downstream, allow-all.
fn replica() -> Setup {
    let setup = Setup::new(REPLICA);
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    setup
}

/// Gives `to` the log key of `from` (every replica signs with the same key).
fn share_key(from: &Setup, to: &Setup) {
    std::fs::create_dir_all(to.data_dir()).expect("mkdir");
    std::fs::copy(from.data_dir().join("audit-key"), to.data_dir().join("audit-key")).expect("copy the log key");
}

/// `airlock log ARGS --config` of `setup` against the shared log.
fn log_cmd(setup: &Setup, db: &TestDb, args: &[&str]) -> std::process::Output {
    std::process::Command::new(airlock())
        .arg("log")
        .args(args)
        .arg("--config")
        .arg(setup.config())
        .env("AIRLOCK_TEST_DB_URL", &db.url)
        .output()
        .expect("run airlock log")
}

/// Calls `demo__echo` with `prefix-N` for N in 0..n on a fresh client of `gateway`,
/// stopping at the first refused call; returns the texts whose results it received.
async fn load(url: String, prefix: String, n: usize) -> Vec<String> {
    let gateway_client = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("{url}/mcp"));
    let Ok(client) = rmcp::ServiceExt::serve(TestClient::new(), gateway_client).await else { return Vec::new() };
    let mut acknowledged = Vec::new();
    for i in 0..n {
        let text = format!("{prefix}-{i}");
        // A call in flight when its replica is killed may never be answered (the client
        // keeps trying to resume the stream): unanswered within a minute counts as refused.
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            client.call_tool(call("demo__echo", serde_json::json!({"text": text}))),
        );
        match answer.await {
            Ok(Ok(result)) if result.is_error != Some(true) => acknowledged.push(text),
            _ => break,
        }
    }
    acknowledged
}

/// The records of the shared log (`airlock log export` through `setup`'s config), after
/// checking that `airlock log verify` accepts the log and `--export` its export.
fn verified_records(setup: &Setup, db: &TestDb) -> Vec<serde_json::Value> {
    let verify = log_cmd(setup, db, &["verify"]);
    let said = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success() && said.contains("ok: records 1..="), "log verify: {said}");
    let export = log_cmd(setup, db, &["export"]);
    assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
    let file = setup.path().join("export.jsonl");
    std::fs::write(&file, &export.stdout).expect("write export");
    let check = std::process::Command::new(airlock())
        .args(["log", "verify", "--data-dir"])
        .arg(setup.data_dir())
        .arg("--export")
        .arg(&file)
        .output()
        .expect("run");
    assert!(check.status.success(), "log verify --export: {}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    String::from_utf8_lossy(&export.stdout).lines().skip(1).map(|l| serde_json::from_str(l).expect("jsonl")).collect()
}

/// Every acknowledged text has a `call_received` whose call has a `call_completed`.
fn missing(records: &[serde_json::Value], acknowledged: &[String]) -> Vec<String> {
    let completed: std::collections::HashSet<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "call_completed").map(|r| &r["call_id"]).collect();
    acknowledged
        .iter()
        .filter(|text| {
            !records
                .iter()
                .any(|r| r["kind"] == "call_received" && r["args"]["text"] == text.as_str() && completed.contains(&r["call_id"]))
        })
        .cloned()
        .collect()
}

/// Three replicas (own data dirs, one key, one database) under concurrent load from
/// several clients each write one log that verifies and holds every acknowledged call;
/// then one replica is SIGKILLed mid-load and still nothing acknowledged is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_write_one_log_and_a_sigkill_loses_nothing_acknowledged() {
    let Some(db) = TestDb::create("three_replicas").await else { return };
    let env = [("AIRLOCK_TEST_DB_URL", db.url.as_str())];
    let replicas = [replica(), replica(), replica()];
    let first = replicas[0].http_with_env(&env).await;
    share_key(&replicas[0], &replicas[1]);
    share_key(&replicas[0], &replicas[2]);
    let mut gateways = vec![first, replicas[1].http_with_env(&env).await, replicas[2].http_with_env(&env).await];
    let mut acknowledged = Vec::new();
    let mut tasks = Vec::new();
    for (r, gateway) in gateways.iter().enumerate() {
        for c in 0..3 {
            tasks.push(tokio::spawn(load(gateway.url.clone(), format!("a-r{r}-c{c}"), 25)));
        }
    }
    for task in tasks {
        acknowledged.extend(task.await.expect("client task"));
    }
    assert_eq!(acknowledged.len(), 3 * 3 * 25, "every call of the first phase is served");
    // Phase two: the same load, and replica 2 is killed while it runs.
    let mut tasks = Vec::new();
    for (r, gateway) in gateways.iter().enumerate() {
        for c in 0..3 {
            tasks.push(tokio::spawn(load(gateway.url.clone(), format!("b-r{r}-c{c}"), 40)));
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    gateways[2].child.kill().await.expect("SIGKILL replica 2");
    for task in tasks {
        acknowledged.extend(task.await.expect("client task"));
    }
    assert!(acknowledged.iter().any(|t| t.starts_with("b-r0")) && acknowledged.iter().any(|t| t.starts_with("b-r1")));
    for gateway in &mut gateways {
        let _ = gateway.child.kill().await;
    }
    let records = verified_records(&replicas[1], &db);
    let lost = missing(&records, &acknowledged);
    assert!(lost.is_empty(), "{} acknowledged calls are not in the shared log: {lost:?}", lost.len());
    assert_eq!(records.iter().filter(|r| r["kind"] == "gateway_started").count(), 3, "one start per replica");
    eprintln!("{} acknowledged calls from three replicas, all in one verified log of {} lines", acknowledged.len(), records.len());
}

/// The text of a refused call (a tool error or a JSON-RPC error), or `None` if it ran.
async fn refusal(url: &str) -> Option<String> {
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("{url}/mcp"));
    let client = match rmcp::ServiceExt::serve(TestClient::new(), transport).await {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    match client.call_tool(call("demo__echo", serde_json::json!({"text": "probe"}))).await {
        Ok(result) if result.is_error == Some(true) => Some(text_of(&result)),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// The database stopped mid-load: calls are refused (fail closed) while it is away, the
/// same replica serves again once it is back, without a restart, and the log is intact
/// with every acknowledged call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_are_refused_while_the_database_is_away_and_served_when_it_returns() {
    let Some(pg) = PrivatePg::start("database_restart") else { return };
    let Some(db) = TestDb::create_on(&pg.url, "database_restart").await else { return };
    let setup = replica();
    let mut gateway = setup.http_with_env(&[("AIRLOCK_TEST_DB_URL", db.url.as_str())]).await;
    let mut acknowledged = load(gateway.url.clone(), "before".into(), 20).await;
    assert_eq!(acknowledged.len(), 20);
    let during = tokio::spawn(load(gateway.url.clone(), "during".into(), 100_000));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    pg.ctl("stop");
    // The load stops at its first refused call; what it got before that was acknowledged.
    acknowledged.extend(during.await.expect("load"));
    let refused = refusal(&gateway.url).await.expect("a call is refused while the database is down");
    eprintln!("refused while the database is down: {refused}");
    pg.ctl("start");
    let mut after = Vec::new();
    for _ in 0..100 {
        after = load(gateway.url.clone(), "after".into(), 20).await;
        if !after.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(after.len(), 20, "the same replica serves again once the database is back");
    acknowledged.extend(after);
    let _ = gateway.child.kill().await;
    let records = verified_records(&setup, &db);
    let lost = missing(&records, &acknowledged);
    assert!(lost.is_empty(), "{} acknowledged calls are not in the log: {lost:?}", lost.len());
}

/// A restored older database (a copy taken earlier) is detected by a replica that saw
/// newer checkpoints: the running one refuses its next call, and a restart refuses to
/// start, naming both sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_older_database_is_refused_naming_both_sizes() {
    let Some(db) = TestDb::create("restored_backup").await else { return };
    let env = [("AIRLOCK_TEST_DB_URL", db.url.as_str())];
    let setup = replica();
    let mut gateway = setup.http_with_env(&env).await;
    assert_eq!(load(gateway.url.clone(), "old".into(), 3).await.len(), 3);
    gateway.child.kill().await.expect("stop");
    let backup = format!("{}_backup", db.name);
    db.admin(&format!("CREATE DATABASE {backup} TEMPLATE {}", db.name)).await;
    let old = db.query("SELECT size FROM audit_head").await.remove(0);
    let mut gateway = setup.http_with_env(&env).await;
    assert_eq!(load(gateway.url.clone(), "new".into(), 3).await.len(), 3);
    let new = db.query("SELECT size FROM audit_head").await.remove(0);
    // Restore the backup under the running replica's feet.
    db.admin(&format!("DROP DATABASE {0} WITH (FORCE)", db.name)).await;
    db.admin(&format!("CREATE DATABASE {0} TEMPLATE {backup}", db.name)).await;
    db.admin(&format!("DROP DATABASE {backup}")).await;
    let refused = refusal(&gateway.url).await.expect("the running replica refuses to append");
    eprintln!("running replica refused: {refused}");
    assert_eq!(db.query("SELECT size FROM audit_head").await, vec![old.clone()], "nothing appended to the restored log");
    let _ = gateway.child.kill().await;
    let start = tokio::process::Command::new(airlock())
        .args(["serve", "--http", "127.0.0.1:0", "--config"])
        .arg(setup.config())
        .envs(env)
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), start).await.expect("start ends").expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a replica started on a rolled-back log: {stderr}");
    assert!(
        stderr.contains(&format!("holds {old} records")) && stderr.contains(&format!("checkpoint of {new} records")),
        "the refusal names both sizes: {stderr}"
    );
}
