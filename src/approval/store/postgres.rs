//! The approvals in PostgreSQL, shared by every replica (tables in
//! `storage/migrations/0002_approvals.sql`).
//!
//! Owns: `PgApprovals`: transitions under one advisory lock, the version check of every
//! write, this replica's mirror of the approvals (what `get` and `list` read) and how it
//! is kept current (NOTIFY `airlock_approvals` on each change, a poll as fallback, a full
//! catch-up after the listener reconnects), this replica's lease and its heartbeat.
//! Uses: `storage::PgPool`, tokio-postgres. Must not: decide or log anything.
//!
//! Why a lock and a version both: the broker logs a transition before it stores it, so a
//! writer that lost a race after logging would leave the log claiming a change that never
//! happened; the advisory lock makes the race impossible across replicas, and the
//! `version = $read` condition on every UPDATE makes a write that bypassed it fail loudly
//! (`StoreError::Conflict`) instead of overwriting. Expiry, like any transition, is thus one
//! conditional UPDATE that succeeds once.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::{ApprovalStore, Change, LEASE, StoreError, Transition, binding_of, is_live};
use crate::approval::{Approval, ApprovalId};
use crate::storage::PgPool;

/// The advisory lock every approval transition takes ("airlock2" as a big-endian i64).
const TRANSITION_LOCK: i64 = 0x6169_726c_6f63_6b32;
/// The channel of approval changes; the payload is the approval id.
pub const CHANNEL: &str = "airlock_approvals";
/// How often the mirror catches up without a notification (a lost one, a listener down).
const POLL: Duration = Duration::from_secs(1);
/// How long to wait before connecting the listener again.
const RECONNECT: Duration = Duration::from_millis(500);

/// A connection of its own for LISTEN: the pool's connections drop notifications.
pub type Listener = Arc<dyn Fn() -> BoxFuture<'static, Result<ListenConnection, String>> + Send + Sync>;

/// A client that can `LISTEN`, and the stream of what its server sends it.
pub struct ListenConnection {
    pub client: tokio_postgres::Client,
    pub messages: futures::stream::BoxStream<'static, Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// The PostgreSQL backend. Cheap to clone.
#[derive(Clone)]
pub struct PgApprovals {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    replica: String,
    mirror: RwLock<Mirror>,
    /// Wakes the catch-up task (a notification arrived, the listener reconnected).
    wake: Notify,
    changes: mpsc::UnboundedSender<Change>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

#[derive(Default)]
struct Mirror {
    by_id: HashMap<ApprovalId, (Approval, i64)>,
    /// The highest `seq` read: everything up to it is in `by_id`.
    seq: i64,
}

impl PgApprovals {
    /// Reads every approval, takes this replica's lease, and starts the heartbeat, the
    /// listener and the catch-up task (they end when the store is dropped).
    pub async fn open(pool: PgPool, listener: Listener) -> Result<PgApprovals, StoreError> {
        let (changes, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pool,
            replica: format!("gw-{}", uuid::Uuid::new_v4().simple()),
            mirror: RwLock::default(),
            wake: Notify::new(),
            changes,
            receiver: std::sync::Mutex::new(Some(receiver)),
        });
        shared.heartbeat().await?;
        shared.catch_up(false).await?;
        let weak = Arc::downgrade(&shared);
        tokio::spawn(heartbeat(weak.clone()));
        tokio::spawn(listen(weak.clone(), listener));
        tokio::spawn(poll(weak));
        Ok(PgApprovals { shared })
    }
}

impl Shared {
    async fn heartbeat(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO gateway_leases (replica) VALUES ($1)
                 ON CONFLICT (replica) DO UPDATE SET heartbeat_at = now()",
                &[&self.replica],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Reads the approvals changed since the last catch-up into the mirror; with
    /// `announce`, reports those another writer changed.
    async fn catch_up(&self, announce: bool) -> Result<(), StoreError> {
        let since = self.mirror.read().unwrap_or_else(PoisonError::into_inner).seq;
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query("SELECT body::text, version, seq FROM approvals WHERE seq > $1 ORDER BY seq", &[&since])
            .await
            .map_err(unavailable)?;
        let mut mirror = self.mirror.write().unwrap_or_else(PoisonError::into_inner);
        for row in rows {
            let (body, version, seq): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            mirror.seq = mirror.seq.max(seq);
            let Ok(after) = serde_json::from_str::<Approval>(&body) else { continue };
            let before = mirror.by_id.get(&after.id).cloned();
            if before.as_ref().is_some_and(|(_, known)| *known >= version) {
                continue;
            }
            mirror.by_id.insert(after.id.clone(), (after.clone(), version));
            if announce {
                let _ = self.changes.send(Change { before: before.map(|(a, _)| a), after });
            }
        }
        Ok(())
    }

    fn remember_read(&self, approval: &Approval, version: i64) {
        let mut mirror = self.mirror.write().unwrap_or_else(PoisonError::into_inner);
        let newer = mirror.by_id.get(&approval.id).is_none_or(|(_, known)| *known < version);
        if newer {
            mirror.by_id.insert(approval.id.clone(), (approval.clone(), version));
        }
    }
}

/// Keeps this replica's lease: a heartbeat every third of it.
async fn heartbeat(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(LEASE / 3).await;
        let Some(shared) = shared.upgrade() else { return };
        if let Err(error) = shared.heartbeat().await {
            tracing::warn!(%error, "could not renew this replica's lease");
        }
    }
}

/// Catches up every `POLL`, and at once when woken.
async fn poll(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else { return };
        if let Err(error) = strong.catch_up(true).await {
            tracing::debug!(%error, "could not read approval changes");
        }
        // Holding the store for one poll at most after it is dropped.
        let _ = tokio::time::timeout(POLL, strong.wake.notified()).await;
    }
}

/// LISTENs on its own connection; each notification wakes the catch-up, and so does each
/// reconnection (notifications sent while it was away are lost, the rows are not).
async fn listen(shared: Weak<Shared>, connect: Listener) {
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        match connect().await {
            Ok(ListenConnection { client, mut messages }) => {
                let listening = async {
                    // Drive the connection while LISTEN is answered.
                    let sql = format!("LISTEN {CHANNEL}");
                    let listen = client.batch_execute(&sql);
                    futures::pin_mut!(listen);
                    loop {
                        tokio::select! {
                            done = &mut listen => return done.map_err(|e| e.to_string()),
                            message = futures::StreamExt::next(&mut messages) => match message {
                                Some(Ok(_)) => {}
                                Some(Err(error)) => return Err(error.to_string()),
                                None => return Err("connection closed".to_owned()),
                            },
                        }
                    }
                };
                if let Err(error) = listening.await {
                    tracing::warn!(%error, "could not LISTEN for approval changes");
                } else {
                    if let Some(shared) = shared.upgrade() {
                        shared.wake.notify_one();
                    }
                    while let Some(message) = futures::StreamExt::next(&mut messages).await {
                        let Some(shared) = shared.upgrade() else { return };
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => shared.wake.notify_one(),
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "the approval listener lost its connection");
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "could not connect the approval listener"),
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// One transition: a pooled connection holding the advisory lock until it is dropped.
struct PgTransition<'a> {
    shared: &'a Shared,
    client: Option<deadpool_postgres::Object>,
    /// The version each approval was read at, for the conditional UPDATE.
    read: HashMap<ApprovalId, i64>,
}

impl PgTransition<'_> {
    fn client(&mut self) -> Result<&mut deadpool_postgres::Object, StoreError> {
        self.client.as_mut().ok_or_else(|| unavailable("the transition's connection is gone"))
    }

    async fn read_one(&mut self, sql: &str, key: &str) -> Result<Option<Approval>, StoreError> {
        let row = self.client()?.query_opt(sql, &[&key]).await.map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let (body, version): (String, i64) = (row.get(0), row.get(1));
        let Ok(approval) = serde_json::from_str::<Approval>(&body) else { return Ok(None) };
        self.read.insert(approval.id.clone(), version);
        self.shared.remember_read(&approval, version);
        Ok(Some(approval))
    }

    async fn write(&mut self, approval: &Approval) -> Result<i64, StoreError> {
        let read = self.read.get(&approval.id).copied();
        let body = serde_json::to_string(approval).unwrap_or_default();
        let id = approval.id.as_str();
        let state = approval.state.as_str();
        let expires = i64::try_from(approval.expires_ms).unwrap_or(i64::MAX);
        let binding = binding_of(approval);
        let live = is_live(approval);
        let client = self.client()?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let version = match read {
            None => {
                tx.execute(
                    "INSERT INTO approvals (id, state, holder, expires_ms, body, version, seq)
                     VALUES ($1, $2, $3, $4, $5::text::jsonb, 1, nextval('approval_changes'))",
                    &[&id, &state, &approval.holder, &expires, &body],
                )
                .await
                .map_err(unavailable)?;
                1
            }
            Some(read) => {
                let changed = tx
                    .execute(
                        "UPDATE approvals SET state = $2, holder = $3, expires_ms = $4, body = $5::text::jsonb,
                             version = version + 1, seq = nextval('approval_changes'), updated_at = now()
                         WHERE id = $1 AND version = $6",
                        &[&id, &state, &approval.holder, &expires, &body, &read],
                    )
                    .await
                    .map_err(unavailable)?;
                if changed == 0 {
                    return Err(StoreError::Conflict(approval.id.clone()));
                }
                read + 1
            }
        };
        if live {
            tx.execute(
                "INSERT INTO approvals_live (binding, approval_id) VALUES ($1, $2)
                 ON CONFLICT (binding) DO UPDATE SET approval_id = EXCLUDED.approval_id",
                &[&binding, &id],
            )
            .await
            .map_err(unavailable)?;
        } else {
            tx.execute("DELETE FROM approvals_live WHERE binding = $1 AND approval_id = $2", &[&binding, &id])
                .await
                .map_err(unavailable)?;
        }
        for vote in &approval.votes {
            let at = i64::try_from(vote.at_ms).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO approval_votes (approval_id, approver, verdict, channel, comment, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&id, &vote.approver, &vote.verdict.as_str(), &vote.channel, &vote.comment, &at],
            )
            .await
            .map_err(unavailable)?;
        }
        // Delivered at commit, to every replica listening: approval changes only.
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id]).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(version)
    }
}

impl Drop for PgTransition<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        // Unlock before the connection goes back to the pool; a connection that cannot
        // unlock is closed instead, which ends the lock with its session.
        tokio::spawn(async move {
            if client.execute("SELECT pg_advisory_unlock($1)", &[&TRANSITION_LOCK]).await.is_err() {
                drop(deadpool_postgres::Object::take(client));
            }
        });
    }
}

impl Transition for PgTransition<'_> {
    fn get<'a>(&'a mut self, id: &'a ApprovalId) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        self.read_one("SELECT body::text, version FROM approvals WHERE id = $1", id.as_str()).boxed()
    }

    fn live<'a>(&'a mut self, binding: &'a str) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        self.read_one(
            "SELECT a.body::text, a.version FROM approvals_live l JOIN approvals a ON a.id = l.approval_id
             WHERE l.binding = $1",
            binding,
        )
        .boxed()
    }

    fn put<'a>(&'a mut self, approval: &'a Approval) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let version = self.write(approval).await?;
            self.read.insert(approval.id.clone(), version);
            self.shared.remember_read(approval, version);
            Ok(())
        }
        .boxed()
    }

    fn remove<'a>(&'a mut self, id: &'a ApprovalId) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.client()?.execute("DELETE FROM approvals WHERE id = $1", &[&id.as_str()]).await.map_err(unavailable)?;
            self.shared.mirror.write().unwrap_or_else(PoisonError::into_inner).by_id.remove(id);
            Ok(())
        }
        .boxed()
    }

    fn orphans(&mut self) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>> {
        async move {
            let lease = LEASE.as_secs_f64();
            let client = self.client()?;
            // The database's clock decides, so replicas' clocks need not agree.
            client
                .execute("DELETE FROM gateway_leases WHERE heartbeat_at < now() - make_interval(secs => $1)", &[&lease])
                .await
                .map_err(unavailable)?;
            let rows = client
                .query(
                    "SELECT a.body::text, a.version FROM approvals a
                     WHERE a.state = 'pending' AND a.holder IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM gateway_leases g WHERE g.replica = a.holder)",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            let mut found = Vec::new();
            for row in rows {
                let (body, version): (String, i64) = (row.get(0), row.get(1));
                if let Ok(approval) = serde_json::from_str::<Approval>(&body) {
                    self.read.insert(approval.id.clone(), version);
                    found.push(approval);
                }
            }
            Ok(found)
        }
        .boxed()
    }
}

impl ApprovalStore for PgApprovals {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Transition + '_>, StoreError>> {
        async move {
            let client = self.shared.pool.get().await.map_err(unavailable)?;
            client.execute("SELECT pg_advisory_lock($1)", &[&TRANSITION_LOCK]).await.map_err(unavailable)?;
            let transition = PgTransition { shared: &self.shared, client: Some(client), read: HashMap::new() };
            Ok(Box::new(transition) as Box<dyn Transition + '_>)
        }
        .boxed()
    }

    fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        Ok(self.shared.mirror.read().unwrap_or_else(PoisonError::into_inner).by_id.get(id).map(|(a, _)| a.clone()))
    }

    fn all(&self) -> Result<Vec<Approval>, StoreError> {
        Ok(self.shared.mirror.read().unwrap_or_else(PoisonError::into_inner).by_id.values().map(|(a, _)| a.clone()).collect())
    }

    fn remember<'a>(&'a self, channel: &'a str, id: &'a ApprovalId, note: &'a Value) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let client = self.shared.pool.get().await.map_err(unavailable)?;
            client
                .execute(
                    "INSERT INTO approval_notes (channel, approval_id, note) VALUES ($1, $2, $3::text::jsonb)
                     ON CONFLICT (channel, approval_id) DO UPDATE SET note = EXCLUDED.note",
                    &[&channel, &id.as_str(), &note.to_string()],
                )
                .await
                .map_err(unavailable)?;
            Ok(())
        }
        .boxed()
    }

    fn forget<'a>(&'a self, channel: &'a str, id: &'a ApprovalId) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let client = self.shared.pool.get().await.map_err(unavailable)?;
            client
                .execute("DELETE FROM approval_notes WHERE channel = $1 AND approval_id = $2", &[&channel, &id.as_str()])
                .await
                .map_err(unavailable)?;
            Ok(())
        }
        .boxed()
    }

    fn notes<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<(ApprovalId, Value)>, StoreError>> {
        async move {
            let client = self.shared.pool.get().await.map_err(unavailable)?;
            let rows = client
                .query("SELECT approval_id, note::text FROM approval_notes WHERE channel = $1 ORDER BY approval_id", &[&channel])
                .await
                .map_err(unavailable)?;
            Ok(rows
                .iter()
                .filter_map(|row| {
                    let id = ApprovalId::parse(row.get::<_, &str>(0))?;
                    Some((id, serde_json::from_str(row.get::<_, &str>(1)).ok()?))
                })
                .collect())
        }
        .boxed()
    }

    fn replica(&self) -> Option<&str> {
        Some(&self.shared.replica)
    }

    fn changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.shared.receiver.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}
