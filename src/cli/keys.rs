//! `airlock keys …`: show and rotate the audit signing key.
//!
//! Owns: the `keys` subcommands.
//! Uses: `audit` (key files, `AuditLog::rotate_key`).
//! Must not: print private key material.

#![allow(clippy::print_stdout)] // printing the public key is the point of `keys show`

use std::process::ExitCode;

use anyhow::Context;

use crate::audit::{AuditConfig, AuditLog, KeyName, LogReader, SigningKey, VerifierKey};
use crate::cli::log::DirArgs;

/// Subcommands of `airlock keys`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Print the public key (base64), key id and note verifier key (`name+hash+base64`).
    Show {
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Replace the signing key; logs a `key_rotated` record signed by the old key.
    Rotate {
        #[command(flatten)]
        dir: DirArgs,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Show { dir } => {
            let (_, paths) = dir.paths()?;
            let key = SigningKey::load(&paths.key)?.public_key();
            println!("public key  {key}");
            println!("key id      {}", key.id());
            // The note key name is the log's origin (what its checkpoints say).
            let origin = LogReader::open(&paths)
                .and_then(|r| r.latest_checkpoint())
                .map_or_else(|_| AuditConfig::new(".").origin, |c| c.origin);
            if let Ok(name) = KeyName::new(&origin) {
                println!("note key    {}", VerifierKey::ed25519(name, key));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rotate { dir } => {
            let (data_dir, paths) = dir.paths()?;
            if !paths.key.exists() {
                anyhow::bail!("no key at {} to rotate from", paths.key.display());
            }
            let old = SigningKey::load(&paths.key)?.public_key();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let recorded = runtime
                .block_on(async {
                    let mut cfg = AuditConfig::new(data_dir);
                    cfg.key_path = Some(paths.key.clone());
                    let log = AuditLog::open(cfg)?;
                    let recorded = log.rotate_key().await;
                    log.close().await?;
                    recorded
                })
                .context("rotating the audit key")?;
            let new = SigningKey::load(&paths.key)?.public_key();
            println!(
                "rotated key {} -> {} (key_rotated record at seq {})",
                old.id(),
                new.id(),
                recorded.seq()
            );
            println!("public key  {new}");
            println!("key id      {}", new.id());
            Ok(ExitCode::SUCCESS)
        }
    }
}
