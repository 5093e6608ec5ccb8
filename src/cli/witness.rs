//! `airlock witness serve`: run a minimal C2SP tlog-witness for one Airlock log.
//!
//! Owns: the `witness` subcommands' arguments.
//! Uses: `witness::server`, `audit` (key files).
//! Must not: make witnessing decisions (the server does).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::audit::{KeyName, PublicKey, VerifierKey};
use crate::witness::server::{self, Settings};

/// Subcommands of `airlock witness`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Cosign checkpoints of one log after checking their signature and consistency.
    Serve {
        /// Where the witness keeps its key and the latest cosigned checkpoint.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The log's key: its note key (`name+hash+base64`, from `airlock keys show`), or
        /// a public key file (then the log's origin is --origin).
        #[arg(long, value_name = "KEY")]
        log_key: String,
        /// The log's origin when --log-key is a plain public key.
        #[arg(long, default_value = "airlock")]
        origin: String,
        /// This witness's name (its key name in cosignatures).
        #[arg(long, default_value = "airlock-witness")]
        name: String,
        /// Address to listen on (port 0 picks one).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8788")]
        listen: SocketAddr,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Serve { dir, log_key, origin, name, listen } = cmd;
    let log = match VerifierKey::parse(&log_key) {
        Ok(vk) => vk,
        Err(_) => {
            let key = match PublicKey::parse(&log_key) {
                Some(k) => k,
                None => PublicKey::read_file(std::path::Path::new(&log_key))
                    .with_context(|| format!("--log-key {log_key}: not a note key, a public key, or a key file"))?,
            };
            VerifierKey::ed25519(KeyName::new(&origin)?, key)
        }
    };
    let settings = Settings { dir, name: KeyName::new(&name)?, log };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let (router, vkey) = server::open(settings)?;
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("could not listen on {listen}"))?;
        let local = listener.local_addr()?;
        eprintln!("airlock: witness key {vkey}");
        // Tests and scripts read this line to find the port.
        eprintln!("airlock: witness listening on http://{local}");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        // The gateway's default HTTP limits guard the witness too (slow clients, big bodies).
        let limits = crate::config::HttpLimits::default();
        crate::http::serve(listener, router, limits, shutdown).await.context("witness HTTP server")?;
        Ok(ExitCode::SUCCESS)
    })
}
