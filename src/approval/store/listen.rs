//! The LISTEN connection of the PostgreSQL approval store: one connection outside the pool
//! (deadpool's drop notifications), to the database the pool uses, with the same TLS
//! rules (`storage::PgPool`: `sslmode` disable / prefer / require / verify-ca /
//! verify-full, `sslrootcert`; whenever TLS is used the certificate and host are verified).
//!
//! Owns: `listener`. Uses: tokio-postgres, tokio-postgres-rustls, rustls-platform-verifier.
//! Must not: put the URL in an error or a log (it carries the password).
//!
//! Why not the pool's own connect: `PgPool` does not hand out its config; this is the seam
//! to replace with a `PgPool` method once it offers a connection outside the pool.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_postgres::config::SslMode;

use super::postgres::{ListenConnection, Listener};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A `Listener` connecting with `url` (read once from `storage.url_env` by the caller).
pub fn listener(url: &str) -> Result<Listener, String> {
    let (config, tls) = parse(url)?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    Ok(Arc::new(move || {
        let config = config.clone();
        let tls = tls.clone();
        async move {
            let (client, mut connection) = config.connect(tls).await.map_err(|e| e.to_string())?;
            let messages = futures::StreamExt::boxed(futures::stream::poll_fn(move |cx| connection.poll_message(cx)));
            Ok(ListenConnection { client, messages })
        }
        .boxed()
    }))
}

fn parse(url: &str) -> Result<(tokio_postgres::Config, rustls::ClientConfig), String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("the storage URL does not parse: {e}"))?;
    let mut require = false;
    let mut root_cert: Option<std::path::PathBuf> = None;
    let mut kept: Vec<(String, String)> = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("sslmode", "verify-ca" | "verify-full" | "require") => require = true,
            ("sslrootcert", path) => root_cert = Some(path.into()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let mut config: tokio_postgres::Config = parsed.as_str().parse().map_err(|e: tokio_postgres::Error| e.to_string())?;
    config.connect_timeout(CONNECT_TIMEOUT);
    if require {
        config.ssl_mode(SslMode::Require);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let tls = match root_cert {
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder.with_platform_verifier().map_err(|e| e.to_string())?.with_no_client_auth()
        }
        Some(path) => {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let mut roots = rustls::RootCertStore::empty();
            let shown = path.display().to_string();
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| format!("sslrootcert {shown}: {e}"))? {
                roots.add(cert.map_err(|e| format!("sslrootcert {shown}: {e}"))?).map_err(|e| format!("sslrootcert {shown}: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok((config, tls))
}
