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
