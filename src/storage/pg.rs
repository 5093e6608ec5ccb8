//! The PostgreSQL pool: the URL from its environment variable, TLS when the URL asks for
//! it, and a pool that fails fast while the database is away.
//!
//! Owns: `PgPool`, `StorageError`, reading `sslmode`/`sslrootcert`.
//! Uses: tokio-postgres, deadpool-postgres, tokio-postgres-rustls, rustls (ring) with the
//! platform verifier (the system's trust store, as the rest of Airlock's outbound TLS).
//! Must not: put the URL, or anything derived from it but the host, in an error or a log.
//!
//! TLS: `sslmode=disable` connects in plain text. `prefer` (also the default) uses TLS when
//! the server offers it. `require`, `verify-ca` and `verify-full` insist on TLS. Whenever
//! TLS is used the server's certificate and host name are verified (stricter than libpq's
//! `require`, which checks neither): against the system roots, or against the PEM file
//! `sslrootcert` names. An unverifiable server is refused, never silently accepted.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgSettings;

/// How long connecting (TCP, TLS, authentication) may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything that can go wrong reaching or preparing the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The URL's variable is not set.
    #[error("the environment variable {0} (storage.url_env) is not set; it must hold the PostgreSQL URL")]
    UrlUnset(String),
    /// The variable does not hold a URL we can use (the value is not repeated).
    #[error("the environment variable {var} (storage.url_env) does not hold a PostgreSQL URL: {why}")]
    BadUrl { var: String, why: String },
    /// The TLS settings cannot be used.
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
    /// The database did not answer or refused the connection.
    #[error("the database is unreachable: {0}")]
    Unreachable(String),
    /// A statement failed.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A migration failed; the schema is as it was before.
    #[error("database migration {version} ({name}) failed: {why}")]
    Migration { version: i64, name: &'static str, why: String },
    /// The database was migrated by a newer Airlock.
    #[error("the database schema is at version {found}, newer than this Airlock knows; upgrade every replica")]
    SchemaTooNew { found: i64 },
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(e: deadpool_postgres::PoolError) -> StorageError {
        match e {
            deadpool_postgres::PoolError::Backend(db) => StorageError::Unreachable(db.to_string()),
            other => StorageError::Unreachable(other.to_string()),
        }
    }
}

/// A pool of connections to the shared database. Clones share the pool.
#[derive(Clone)]
pub struct PgPool {
    pool: Pool,
    /// The host(s) the URL names, for messages (never the URL).
    target: String,
    /// What the pool connects with, for `connect_unpooled`.
    config: tokio_postgres::Config,
    connector: MakeRustlsConnect,
}

/// A connection made outside the pool; the caller drives it (polls it for its messages).
pub type UnpooledConnection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgPool({})", self.target)
    }
}

impl PgPool {
    /// Builds the pool from the URL in `settings.url_env`; connects lazily. Must be called
    /// inside a tokio runtime, whose tasks then drive the connections.
    pub fn new(settings: &PgSettings) -> Result<PgPool, StorageError> {
        let var = settings.url_env.as_str().to_owned();
        let url = settings.url_env.get().ok_or_else(|| StorageError::UrlUnset(var.clone()))?;
        PgPool::from_url(&url, &var, settings.pool_size)
    }

    /// `new` with the URL given (`var` names where it came from, for messages).
    pub fn from_url(url: &str, var: &str, pool_size: usize) -> Result<PgPool, StorageError> {
        let bad = |why: String| StorageError::BadUrl { var: var.to_owned(), why };
        let (config_url, tls) = TlsWanted::split(url).map_err(bad)?;
        let mut config: tokio_postgres::Config = config_url.parse().map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if tls.require {
            config.ssl_mode(SslMode::Require);
        }
        let target = targets(&config);
        let connector = MakeRustlsConnect::new(tls.client_config()?);
        let manager = Manager::from_config(config.clone(), connector.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StorageError::Unreachable(e.to_string()))?;
        Ok(PgPool { pool, target, config, connector })
    }

    /// Builds the pool, connects once and applies the migrations the database lacks.
    pub async fn connect(settings: &PgSettings) -> Result<PgPool, StorageError> {
        let pool = PgPool::new(settings)?;
        pool.migrate().await?;
        Ok(pool)
    }

    /// Applies missing migrations (`migrations::MIGRATIONS`) under the advisory lock.
    pub async fn migrate(&self) -> Result<usize, StorageError> {
        let mut client = self.get().await?;
        super::migrations::migrate(&mut client).await
    }

    /// A connection from the pool.
    pub async fn get(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(db) => StorageError::Unreachable(format!("{}: {db}", self.target)),
            other => StorageError::Unreachable(format!("{}: {other}", self.target)),
        })
    }

    /// A connection of its own with the pool's URL and TLS rules, for `LISTEN`: a pooled
    /// connection's notifications are dropped by the pool.
    pub async fn connect_unpooled(&self) -> Result<(tokio_postgres::Client, UnpooledConnection), StorageError> {
        self.config
            .connect(self.connector.clone())
            .await
            .map_err(|e| StorageError::Unreachable(format!("{}: {e}", self.target)))
    }

    /// Where the pool connects (hosts and ports, no credentials), for messages.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// The hosts and ports of a parsed config, without user, password or options.
fn targets(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            }
        })
        .collect();
    format!("postgres://{}", hosts.join(","))
}

/// What the URL asks of TLS beyond what tokio-postgres parses itself.
struct TlsWanted {
    /// `require`, `verify-ca` or `verify-full`: refuse a server without TLS.
    require: bool,
    /// `sslrootcert`: trust only the CAs of this PEM file.
    root_cert: Option<std::path::PathBuf>,
}

impl TlsWanted {
    /// Takes `sslmode=verify-*` and `sslrootcert` out of the URL (tokio-postgres knows
    /// neither) and says what they asked for.
    fn split(url: &str) -> Result<(String, TlsWanted), String> {
        let mut parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e}); write postgres://user@host:port/database"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!("the scheme must be postgres:// or postgresql://, not {}://", parsed.scheme()));
        }
        let mut wanted = TlsWanted { require: false, root_cert: None };
        let mut kept: Vec<(String, String)> = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("sslmode", "verify-ca" | "verify-full" | "require") => wanted.require = true,
                ("sslmode", "disable" | "prefer") => kept.push((key.into_owned(), value.into_owned())),
                ("sslmode", other) => {
                    return Err(format!("sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"));
                }
                ("sslrootcert", path) => wanted.root_cert = Some(path.into()),
                _ => kept.push((key.into_owned(), value.into_owned())),
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        Ok((parsed.into(), wanted))
    }

    fn client_config(&self) -> Result<rustls::ClientConfig, StorageError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StorageError::Tls(e.to_string()))?;
        let config = match &self.root_cert {
            None => {
                use rustls_platform_verifier::BuilderVerifierExt;
                builder.with_platform_verifier().map_err(|e| StorageError::Tls(e.to_string()))?.with_no_client_auth()
            }
            Some(path) => {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| StorageError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
                for cert in certs {
                    let cert = cert.map_err(|e| StorageError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
                    roots.add(cert).map_err(|e| StorageError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(config)
    }
}

/// For unit tests: the URL of a fresh database of its own on the test server
/// (`AIRLOCK_TEST_PG_URL`), or None after saying SKIPPED; under `CI` a missing server fails.
#[cfg(test)]
pub(crate) async fn test_database(test: &str) -> Option<String> {
    let admin = match std::env::var("AIRLOCK_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => panic!("{test}: CI is set but AIRLOCK_TEST_PG_URL is not"),
        _ => {
            eprintln!("SKIPPED {test}: needs PostgreSQL (AIRLOCK_TEST_PG_URL)");
            return None;
        }
    };
    let name = format!("airlock_unit_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let mut url = url::Url::parse(&admin).expect("url");
    url.set_path(&name);
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_and_the_root_cert_are_taken_out_of_the_url() {
        let (url, tls) = TlsWanted::split("postgres://u:p@db.example:6432/airlock?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x").unwrap();
        assert_eq!(url, "postgres://u:p@db.example:6432/airlock?application_name=x");
        assert!(tls.require);
        assert_eq!(tls.root_cert.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        let (url, tls) = TlsWanted::split("postgresql://h/d?sslmode=disable").unwrap();
        assert_eq!(url, "postgresql://h/d?sslmode=disable");
        assert!(!tls.require);
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let err = PgPool::from_url("mysql://u:secret@h/d", "DB_URL", 2).unwrap_err().to_string();
        assert!(err.contains("DB_URL") && !err.contains("secret"), "{err}");
        let err = PgPool::from_url("postgres://u:secret@h/d?sslmode=maybe", "DB_URL", 2).unwrap_err().to_string();
        assert!(err.contains("sslmode=maybe") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn the_target_names_hosts_not_credentials() {
        let config: tokio_postgres::Config = "postgres://u:secret@db1:6432/airlock".parse().unwrap();
        assert_eq!(targets(&config), "postgres://db1:6432");
    }
}
