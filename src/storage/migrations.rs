//! The versioned schema: numbered SQL files, applied in order at start, each once.
//!
//! Owns: `MIGRATIONS` and `migrate`.
//! Uses: tokio-postgres.
//! Must not: change a migration that has shipped (a database that applied it would never
//! see the change): add a new file with the next number instead.
//!
//! A module that needs tables adds `migrations/NNNN_name.sql` and one entry below. All of
//! them run in one transaction that first takes `pg_advisory_xact_lock(MIGRATION_LOCK)`,
//! so replicas starting together apply each migration once, and a failed one leaves the
//! schema as it was (the lock goes with the transaction, even if the connection dies).

use super::pg::StorageError;

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in increasing order; recorded in `schema_migrations.version`.
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order: the audit log (1), approvals, fingerprints and chat notes
/// (2), rate-limit buckets (3).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "audit_log",
        sql: include_str!("migrations/0001_audit_log.sql"),
    },
    // Approvals, votes, the live index, chat notes, leases, tool fingerprints (pgstate).
    Migration {
        version: 2,
        name: "approvals",
        sql: include_str!("migrations/0002_approvals.sql"),
    },
    // Rate-limit buckets shared by the replicas (pglimits).
    Migration {
        version: 3,
        name: "rate_limits",
        sql: include_str!("migrations/0003_rate_limits.sql"),
    },
];

/// The advisory lock key of schema migrations ("airlock1" as a big-endian i64).
const MIGRATION_LOCK: i64 = 0x6169_726c_6f63_6b31;

/// Applies the migrations `client`'s database lacks; returns how many it applied.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, StorageError> {
    apply(client, MIGRATIONS).await
}

async fn apply(client: &mut tokio_postgres::Client, list: &[Migration]) -> Result<usize, StorageError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version bigint PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let rows = tx.query("SELECT version FROM schema_migrations", &[]).await?;
    let done: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    if let Some(newest) = done.iter().max()
        && list.iter().all(|m| m.version < *newest)
    {
        return Err(StorageError::SchemaTooNew { found: *newest });
    }
    let mut applied = 0;
    for m in list.iter().filter(|m| !done.contains(&m.version)) {
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| StorageError::Migration { version: m.version, name: m.name, why: e.to_string() })?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[&m.version, &m.name])
            .await?;
        applied += 1;
    }
    tx.commit().await?;
    if applied > 0 {
        tracing::info!(applied, "applied database migrations");
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.iter().all(|m| m.version > 0 && !m.sql.trim().is_empty()));
    }
}
