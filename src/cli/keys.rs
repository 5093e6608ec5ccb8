//! `airlock keys …`: show and rotate the audit signing key.
//!
//! Owns: the `keys` subcommands.
//! Uses: `audit` (key files), `control::Rotated` (the rotation, on the running gateway
//! over its socket or on the log opened here).
//! Must not: print private key material.

#![allow(clippy::print_stdout)] // printing the public key is the point of `keys show`

use std::process::ExitCode;

use anyhow::Context;

use crate::audit::{AuditConfig, AuditLog, KeyName, LogReader, SigningKey, VerifierKey};
use crate::cli::log::DirArgs;
use crate::control::Rotated;

/// Subcommands of `airlock keys`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Print the public key (base64), key id and note verifier key (`name+hash+base64`).
    Show {
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Replace the signing key; logs a `key_rotated` record signed by the old key. A
    /// running gateway switches keys in its writer (operators only).
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
            if dir.shared_log()?.is_some() {
                anyhow::bail!("{}", crate::audit::AuditError::SharedRotation);
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            // A running gateway rotates in its writer's order; else the log is opened here.
            let live = runtime.block_on(async {
                match dir.live().await? {
                    Some(mut connection) => Ok::<_, anyhow::Error>(Some(connection.call(&crate::control::Request::KeysRotate).await?)),
                    None => Ok(None),
                }
            })?;
            let rotated: Rotated = match live {
                Some(done) => serde_json::from_value(done).context("the gateway's answer is unreadable")?,
                None => {
                    let (data_dir, paths) = dir.paths()?;
                    if !paths.key.exists() {
                        anyhow::bail!("no key at {} to rotate from", paths.key.display());
                    }
                    runtime
                        .block_on(async {
                            let mut cfg = AuditConfig::new(data_dir);
                            cfg.key_path = Some(paths.key.clone());
                            let log = AuditLog::open(cfg)?;
                            let rotated = Rotated::rotate(&log).await;
                            log.close().await?;
                            rotated
                        })
                        .context("rotating the audit key")?
                }
            };
            println!("rotated key {} -> {} (key_rotated record at seq {})", rotated.old_key_id, rotated.new_key_id, rotated.seq);
            println!("public key  {}", rotated.public_key);
            println!("key id      {}", rotated.new_key_id);
            Ok(ExitCode::SUCCESS)
        }
    }
}
