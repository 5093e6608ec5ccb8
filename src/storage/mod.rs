//! Where shared state lives: the backend choice (`[storage]`) and, for PostgreSQL, the
//! connection pool, TLS and the versioned schema migrations.
//!
//! Owns: `StorageConfig`/`Backend` (the checked `[storage]` section), `PgPool` (the pool
//! every PostgreSQL store shares), the migration list (`migrations`), and the PostgreSQL
//! implementation of the audit log's store.
//! Uses: `config::EnvVarName`, `audit` (the store interface it implements),
//! tokio-postgres + deadpool-postgres, rustls (ring) with the platform verifier.
//! Must not: log the URL or anything read from its variable (it carries the password);
//! decide anything about records, approvals or fingerprints (their modules do).
//!
//! sled stays the default: with `backend = "sled"` nothing here runs and each module keeps
//! its embedded store under `gateway.data_dir`.

mod audit_pg;
pub mod migrations;
mod pg;

pub use audit_pg::{open_log, open_reader};
pub use pg::{PgPool, StorageError, UnpooledConnection};
#[cfg(test)]
pub(crate) use pg::test_database;

use crate::config::EnvVarName;

/// `[storage]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorageConfig {
    pub backend: Backend,
}

/// Which backend keeps the log, approvals, fingerprints and chat notes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// Embedded sled databases under `gateway.data_dir` (one gateway per data dir).
    #[default]
    Sled,
    /// One PostgreSQL database shared by every replica.
    Postgres(PgSettings),
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// The environment variable holding the connection URL (`storage.url_env`).
    pub url_env: EnvVarName,
    /// Most connections the pool opens (`storage.pool_size`).
    pub pool_size: usize,
}

impl PgSettings {
    pub const DEFAULT_POOL_SIZE: usize = 8;
}

/// What `airlock check --connect` says of a reachable database: where it is and whether
/// its schema is this Airlock's. Reads only.
pub async fn schema_status(settings: &PgSettings) -> Result<String, StorageError> {
    let pool = PgPool::new(settings)?;
    let client = pool.get().await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let applied: i64 = if exists {
        client.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[]).await?.get(0)
    } else {
        0
    };
    let known = migrations::MIGRATIONS.last().map_or(0, |m| m.version);
    let state = match applied.cmp(&known) {
        std::cmp::Ordering::Equal => "up to date".to_owned(),
        std::cmp::Ordering::Less => format!("{} to apply at the next start", known - applied),
        std::cmp::Ordering::Greater => "NEWER than this Airlock: upgrade it".to_owned(),
    };
    Ok(format!("postgres at {} reachable; schema version {applied} of {known} ({state})", pool.target()))
}
