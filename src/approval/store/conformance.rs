//! One conformance suite for every approval store: plain async functions over
//! `&dyn ApprovalStore`, run against sled here and against PostgreSQL when the test server
//! of `.ci/run` is there (`AIRLOCK_TEST_PG_URL`; SKIPPED otherwise, a failure under CI).

use serde_json::json;

use super::{ApprovalStore, StoreError, binding_of};
use crate::approval::{ApprovalId, State, sample_approval};

/// A fresh approval with its own id.
fn fresh() -> crate::approval::Approval {
    let mut approval = sample_approval(json!({"a": 1}), Some("r"), "why");
    approval.id = ApprovalId::generate();
    approval.args_hmac = approval.id.as_str().repeat(2);
    approval
}

/// Writes, reads back in and out of a transition, and the live index follows the state.
async fn puts_and_the_live_index_agree(store: &dyn ApprovalStore) {
    let mut approval = fresh();
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.get(&approval.id).await.expect("get").is_none());
    tx.put(&approval).await.expect("put");
    assert_eq!(tx.live(&binding_of(&approval)).await.expect("live").map(|a| a.id), Some(approval.id.clone()));
    approval.state = State::Denied;
    tx.put(&approval).await.expect("put again");
    assert!(tx.live(&binding_of(&approval)).await.expect("live").is_none(), "a settled hold leaves the index");
    drop(tx);
    assert_eq!(store.get(&approval.id).expect("get").map(|a| a.state), Some(State::Denied));
    assert!(store.all().expect("all").iter().any(|a| a.id == approval.id));
}

/// Notes are kept per channel until forgotten.
async fn notes_are_kept_per_channel(store: &dyn ApprovalStore) {
    let approval = fresh();
    store.remember("slack", &approval.id, &json!({"ts": "1.2"})).await.expect("remember");
    let notes = store.notes("slack").await.expect("notes");
    assert!(notes.iter().any(|(id, note)| *id == approval.id && note["ts"] == "1.2"), "{notes:?}");
    assert!(store.notes("teams").await.expect("notes").iter().all(|(id, _)| *id != approval.id));
    store.forget("slack", &approval.id).await.expect("forget");
    assert!(store.notes("slack").await.expect("notes").iter().all(|(id, _)| *id != approval.id));
}

async fn run_all(store: &dyn ApprovalStore) {
    puts_and_the_live_index_agree(store).await;
    notes_are_kept_per_channel(store).await;
}

#[tokio::test]
async fn sled_conforms() {
    let db = sled::Config::new().temporary(true).open().expect("db");
    run_all(&super::sled::SledApprovals::open(&db).expect("store")).await;
}

/// A database of its own on the test server, with the migrations applied.
async fn pg_store(test: &str) -> Option<(super::postgres::PgApprovals, crate::storage::PgPool, String)> {
    let url = crate::storage::test_database(test).await?;
    let pool = crate::storage::PgPool::from_url(&url, "AIRLOCK_TEST_PG_URL", 4).expect("pool");
    pool.migrate().await.expect("migrate");
    let listener = super::listen::listener(pool.clone());
    Some((super::postgres::PgApprovals::open(pool.clone(), listener).await.expect("open"), pool, url))
}

#[tokio::test]
async fn postgres_conforms_and_a_stale_write_is_a_conflict() {
    let Some((store, pool, _)) = pg_store("postgres_conforms").await else { return };
    run_all(&store).await;
    let approval = fresh();
    {
        let mut tx = store.begin().await.expect("begin");
        tx.put(&approval).await.expect("put");
    }
    // Someone bumps the version behind the store's back: the next write is refused.
    let mut tx = store.begin().await.expect("begin");
    let read = tx.get(&approval.id).await.expect("get").expect("there");
    pool.get()
        .await
        .expect("client")
        .execute("UPDATE approvals SET version = version + 1 WHERE id = $1", &[&approval.id.as_str()])
        .await
        .expect("bump");
    let error = tx.put(&read).await.expect_err("a stale write");
    assert!(matches!(error, StoreError::Conflict(_)), "{error}");
}

#[tokio::test]
async fn a_replica_learns_of_another_replicas_change() {
    let Some((first, pool, _)) = pg_store("replica_learns").await else { return };
    let second = super::postgres::PgApprovals::open(pool.clone(), super::listen::listener(pool))
        .await
        .expect("open");
    let mut changes = second.changes().expect("a shared store reports changes");
    let mut approval = fresh();
    first.begin().await.expect("begin").put(&approval).await.expect("put");
    let change = changes.recv().await.expect("a change");
    assert!(change.before.is_none() && change.after.id == approval.id);
    approval.state = State::Approved;
    {
        let mut tx = first.begin().await.expect("begin");
        tx.get(&approval.id).await.expect("get");
        tx.put(&approval).await.expect("put");
    }
    let change = changes.recv().await.expect("a change");
    assert_eq!((change.before.map(|a| a.state), change.after.state), (Some(State::Pending), State::Approved));
    assert_eq!(second.get(&approval.id).expect("get").map(|a| a.state), Some(State::Approved));
}
