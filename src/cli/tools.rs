//! `airlock tools list|accept`: the tools a gateway exposes and their fingerprints, through
//! the running gateway of the data dir when one runs, else from the files.

use std::process::ExitCode;

use anyhow::Context;

use crate::control::{Request, ToolRow, tool_rows};
use crate::gateway::fingerprints::Fingerprints;

/// Subcommands of `airlock tools`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Print every exposed tool: server, risk and its source, fingerprint and status
    /// (trusted, new, changed, unaccepted). With a gateway running: the catalog it serves.
    /// Without: starts the downstreams and stores nothing (the gateway trusts first
    /// sightings and upgrades version-1 fingerprints when it runs).
    List {
        #[command(flatten)]
        config: super::ConfigArg,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept a changed (or held new) tool's current definition (it stops being critical).
    /// A running gateway serves it at its manifest risk at once (operators only).
    Accept {
        #[command(flatten)]
        config: super::ConfigArg,
        /// The exposed tool name, e.g. demo__delete_bucket.
        name: String,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (config, request) = match &cmd {
        Command::List { config, .. } => (config, Request::ToolsList),
        Command::Accept { config, name } => (config, Request::ToolsAccept { name: name.clone() }),
    };
    let loaded = super::gateway::load_config(config)?;
    let live = super::live::runtime()?.block_on(async {
        let Some(mut connection) =
            super::live::connect(&loaded.gateway.data_dir, super::serve::canonical_config(&loaded)).await?
        else {
            return Ok::<_, anyhow::Error>(None);
        };
        Ok(Some(connection.call(&request).await?))
    })?;
    match (cmd, live) {
        (Command::List { json, .. }, Some(done)) => {
            let rows: Vec<ToolRow> = serde_json::from_value(done).context("the gateway sent tool rows this airlock cannot read")?;
            print_rows(&rows, json)
        }
        (Command::List { config, json }, None) => list(&config, json),
        (Command::Accept { name, .. }, Some(done)) => {
            let fingerprint = done["fingerprint"].as_str().unwrap_or("?");
            say(&format!("accepted {name} at fingerprint {fingerprint}; the running gateway serves it now"));
            Ok(ExitCode::SUCCESS)
        }
        (Command::Accept { config, name }, None) => accept(&config, &name),
    }
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("{line}");
}

fn open_fingerprints(config: &super::check::Checked) -> anyhow::Result<Fingerprints> {
    let data_dir = &config.config.gateway.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("could not create {}", data_dir.display()))?;
    Fingerprints::open(data_dir).with_context(|| format!("could not open the gateway state in {}", data_dir.display()))
}

fn list(config: &super::ConfigArg, json: bool) -> anyhow::Result<ExitCode> {
    let checked = super::check::load_everything(config)?;
    if !checked.problems.is_empty() {
        anyhow::bail!("the configuration has problems (run `airlock check`):\n{}", checked.problems);
    }
    let fingerprints = open_fingerprints(&checked)?;
    let catalog = super::wiring::live_catalog(&checked)?;
    let vetted = crate::gateway::vet_stored(&fingerprints, &catalog, checked.config.gateway.new_tools);
    print_rows(&tool_rows(&vetted), json)
}

#[allow(clippy::print_stdout)]
fn print_rows(rows: &[ToolRow], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<40} {:<12} {:<9} {:<10} {:<19} source", "tool", "server", "risk", "status", "fingerprint");
    for row in rows {
        println!(
            "{:<40} {:<12} {:<9} {:<10} {:<19} {}",
            row.tool,
            row.server,
            row.risk,
            row.status,
            row.fingerprint.chars().take(19).collect::<String>(),
            row.source
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn accept(config: &super::ConfigArg, name: &str) -> anyhow::Result<ExitCode> {
    let checked = super::check::load_everything(config)?;
    let fingerprints = open_fingerprints(&checked)?;
    let accepted = super::live::runtime()?.block_on(fingerprints.accept(name))?;
    say(&format!("accepted {name} at fingerprint {accepted}"));
    Ok(ExitCode::SUCCESS)
}
