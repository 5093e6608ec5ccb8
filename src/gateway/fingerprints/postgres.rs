//! Tool fingerprints in PostgreSQL (table `tool_fingerprints`), shared by every replica.
//!
//! Owns: `PgFingerprints` and its in-memory copy of the table, which `check` reads (the
//! catalog is vetted synchronously) and which is read again every few seconds, so an
//! accept or a change another replica stored is seen here without a restart.
//! Uses: `storage::PgPool`. Must not: compare fingerprints (`Fingerprints` does).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::store::{Entry, FingerprintStore};
use super::FingerprintError;
use crate::storage::PgPool;

/// How often the copy is read again.
const REFRESH: Duration = Duration::from_secs(2);

/// The PostgreSQL backend.
pub struct PgFingerprints {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    copy: RwLock<HashMap<String, Entry>>,
}

fn unavailable(error: impl std::fmt::Display) -> FingerprintError {
    FingerprintError::Store(error.to_string())
}

impl PgFingerprints {
    /// Reads the table, and keeps reading it in the background while the store lives.
    pub async fn open(pool: PgPool) -> Result<PgFingerprints, FingerprintError> {
        let shared = Arc::new(Shared { pool, copy: RwLock::default() });
        shared.reload().await?;
        tokio::spawn(refresh(Arc::downgrade(&shared)));
        Ok(PgFingerprints { shared })
    }
}

impl Shared {
    async fn reload(&self) -> Result<(), FingerprintError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client.query("SELECT name, accepted, seen FROM tool_fingerprints", &[]).await.map_err(unavailable)?;
        let copy = rows.iter().map(|row| (row.get(0), Entry { accepted: row.get(1), seen: row.get(2) })).collect();
        *self.copy.write().unwrap_or_else(PoisonError::into_inner) = copy;
        Ok(())
    }
}

async fn refresh(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(shared) = shared.upgrade() else { return };
        if let Err(error) = shared.reload().await {
            tracing::debug!(%error, "could not read the tool fingerprints again");
        }
    }
}

impl FingerprintStore for PgFingerprints {
    fn get(&self, exposed_name: &str) -> Result<Option<Entry>, FingerprintError> {
        Ok(self.shared.copy.read().unwrap_or_else(PoisonError::into_inner).get(exposed_name).cloned())
    }

    fn put_all<'a>(&'a self, entries: &'a [(String, Entry)]) -> BoxFuture<'a, Result<(), FingerprintError>> {
        async move {
            if entries.is_empty() {
                return Ok(());
            }
            let mut client = self.shared.pool.get().await.map_err(unavailable)?;
            let tx = client.transaction().await.map_err(unavailable)?;
            for (name, entry) in entries {
                tx.execute(
                    "INSERT INTO tool_fingerprints (name, accepted, seen) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET accepted = EXCLUDED.accepted, seen = EXCLUDED.seen, updated_at = now()",
                    &[name, &entry.accepted, &entry.seen],
                )
                .await
                .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)?;
            let mut copy = self.shared.copy.write().unwrap_or_else(PoisonError::into_inner);
            for (name, entry) in entries {
                copy.insert(name.clone(), entry.clone());
            }
            Ok(())
        }
        .boxed()
    }
}
