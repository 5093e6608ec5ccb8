//! `airlock reload`: asks the running gateway of the config's data dir to re-read
//! `airlock.toml`, manifests and policies (the control socket's `reload`, operators only).
//!
//! Owns: the command and how its outcome is printed and exited.
//! Uses: `cli::live`, `control::Request::Reload`.
//! Must not: read or validate the files itself: the gateway validates before it swaps, and
//! its diagnostics are what counts.

use std::process::ExitCode;

use crate::cli::EXIT_FOUND_PROBLEM;
use crate::control::{ControlError, RefusalCode, Request};

/// Arguments of `airlock reload`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    /// Print the gateway's report as JSON.
    #[arg(long)]
    json: bool,
}

#[allow(clippy::print_stdout)] // the report is the command's output
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = super::gateway::load_config(&args.config)?;
    let data_dir = config.gateway.data_dir.clone();
    super::live::runtime()?.block_on(async {
        let Some(mut connection) = super::live::connect(&data_dir, super::serve::canonical_config(&config)).await? else {
            eprintln!(
                "airlock: no gateway is running for {}: nothing to reload (a gateway reads the files when it starts; `airlock check` validates them)",
                data_dir.display()
            );
            return Ok(ExitCode::from(EXIT_FOUND_PROBLEM));
        };
        match connection.call(&Request::Reload).await {
            Ok(report) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!("reloaded the gateway of {} (pid {})", data_dir.display(), connection.welcome.pid);
                    println!("{}", serde_json::to_string(&report)?);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(ControlError::Refused(refusal)) if refusal.code == RefusalCode::ReloadRefused => {
                for line in refusal.message.lines() {
                    eprintln!("{line}");
                }
                eprintln!("airlock: reload refused; the gateway keeps its running configuration");
                Ok(ExitCode::from(EXIT_FOUND_PROBLEM))
            }
            Err(error) => Err(error.into()),
        }
    })
}
