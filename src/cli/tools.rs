//! `airlock tools list|accept`: the tools a gateway exposes and their fingerprints.

use std::process::ExitCode;

use anyhow::Context;

use crate::gateway::fingerprints::{Fingerprints, FirstSight, Status};
use crate::risk::{Risk, RiskSource};

/// Subcommands of `airlock tools`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Start the downstreams and print every exposed tool: server, risk and its source,
    /// fingerprint and status (trusted, new, changed, unaccepted). Stores nothing: the
    /// gateway trusts first sightings and upgrades version-1 fingerprints when it runs.
    List {
        #[command(flatten)]
        config: super::ConfigArg,
    },
    /// Accept a changed (or held new) tool's current definition (it stops being critical).
    Accept {
        #[command(flatten)]
        config: super::ConfigArg,
        /// The exposed tool name, e.g. demo__delete_bucket.
        name: String,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cmd {
        Command::List { config } => list(&config),
        Command::Accept { config, name } => accept(&config, &name),
    }
}

fn open_fingerprints(config: &super::check::Checked) -> anyhow::Result<Fingerprints> {
    let data_dir = &config.config.gateway.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("could not create {}", data_dir.display()))?;
    Fingerprints::open(data_dir).with_context(|| {
        format!("could not open the gateway state in {} (is a gateway running on it? stop it first)", data_dir.display())
    })
}

#[allow(clippy::print_stdout)]
fn list(config: &super::ConfigArg) -> anyhow::Result<ExitCode> {
    let checked = super::check::load_everything(config)?;
    if !checked.problems.is_empty() {
        anyhow::bail!("the configuration has problems (run `airlock check`):\n{}", checked.problems);
    }
    let fingerprints = open_fingerprints(&checked)?;
    let catalog = super::wiring::live_catalog(&checked)?;
    println!("{:<40} {:<12} {:<9} {:<10} {:<19} source", "tool", "server", "risk", "status", "fingerprint");
    for entry in catalog.entries() {
        let name = entry.exposed.name.as_ref();
        let observation = fingerprints.check(entry.server.name(), name, &entry.tool, FirstSight::Trust)?;
        let (risk, source) = match observation.status {
            Status::Changed => (Risk::Critical, RiskSource::FingerprintChanged),
            Status::Unaccepted => (Risk::Critical, RiskSource::NewTool),
            Status::Trusted | Status::New => (entry.risk, entry.risk_source),
        };
        let short = observation.fingerprint.to_string();
        println!(
            "{:<40} {:<12} {:<9} {:<10} {:<19} {}",
            name,
            entry.server.name(),
            risk.as_str(),
            observation.status.as_str(),
            &short[..19.min(short.len())],
            source.describe()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
fn accept(config: &super::ConfigArg, name: &str) -> anyhow::Result<ExitCode> {
    let checked = super::check::load_everything(config)?;
    let fingerprints = open_fingerprints(&checked)?;
    let accepted = fingerprints.accept(name)?;
    println!("accepted {name} at fingerprint {accepted}");
    Ok(ExitCode::SUCCESS)
}
