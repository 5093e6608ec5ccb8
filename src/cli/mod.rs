//! The command line: one file per subcommand.
//!
//! Owns: argument parsing (clap), turning errors into one `airlock:` line and an exit code.
//! Uses: every other module, through their public APIs.
//! Must not: make decisions of its own; business logic lives in the pipeline modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod approvals;
mod check;
mod demo;
mod demo_tools;
mod explain;
mod explain_reads;
mod gateway;
mod keys;
mod log;
mod log_export;
mod live;
mod log_live;
mod log_trust;
mod metrics;
mod receipts;
mod reload;
mod report;
mod serve;
mod serve_reload;
mod serve_state;
mod tokens;
mod tools;
mod wiring;
mod witness;

/// Exit code for "the command ran and found a problem" (invalid config, tampered log,
/// a refused approval decision, an invalid receipt).
pub const EXIT_FOUND_PROBLEM: u8 = 1;
/// Exit code for "the command could not run" (bad arguments, unreadable files).
pub const EXIT_ERROR: u8 = 2;

/// Airlock: an MCP gateway that holds risky tool calls for human approval.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The `--config` flag shared by commands that read `airlock.toml`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Path to airlock.toml (default: ./airlock.toml if present, else built-in defaults).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (stdio by default; --http ADDR for HTTP).
    Serve(serve::Args),
    /// The gateway that owns the data dir: run, start, stop, status.
    #[command(subcommand)]
    Gateway(gateway::Command),
    /// Validate airlock.toml, tool manifests and policies.
    Check(check::Args),
    /// Explain the policy decision for a call, without calling anything.
    Explain(explain::Args),
    /// Inspect and accept tool fingerprints.
    #[command(subcommand)]
    Tools(tools::Command),
    /// Inspect and verify the audit log.
    #[command(subcommand)]
    Log(log::Command),
    /// Print the running gateway's metrics (Prometheus text) over its control socket (operators).
    Metrics(metrics::Args),
    /// Ask the running gateway to re-read airlock.toml, manifests and policies (operators).
    Reload(reload::Args),
    /// Show or rotate the audit signing key.
    #[command(subcommand)]
    Keys(keys::Command),
    /// The quickstart: a scripted agent's allowed, held-and-approved, denied and expired
    /// calls through the shipped configuration, then the verified log.
    Demo(demo::Args),
    /// List, show, approve and deny held calls on a running gateway (its socket or HTTP API).
    #[command(subcommand)]
    Approvals(approvals::Command),
    /// The evidence of a period for auditors: verification, totals, holds and who decided
    /// them, exceptions (HTML, PDF or JSON).
    Report(report::Args),
    /// Verify approval receipts with the public key alone.
    #[command(subcommand)]
    Receipts(receipts::Command),
    /// Make static bearer tokens for [[identity.tokens]].
    #[command(subcommand)]
    Tokens(tokens::Command),
    /// Run a witness that cosigns another gateway's checkpoints.
    #[command(subcommand)]
    Witness(witness::Command),
    /// Run the built-in demo tool server over stdio (a downstream for tests and the demo).
    DemoTools(demo_tools::Args),
}

/// Parses the command line, runs the command, and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's narrative is on stdout; keep the gateway's own logs to warnings.
    // `serve` installs its subscriber once its `[telemetry]` is read (serve::run).
    let _logs = match &cli.command {
        // Both install their subscriber once their `[telemetry]` is read.
        Command::Serve(_) | Command::Gateway(gateway::Command::Run(_)) => None,
        Command::Demo(_) => init_tracing("warn,rmcp=error"),
        _ => init_tracing("info,rmcp=warn"),
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Gateway(cmd) => gateway::run(cmd),
        Command::Check(args) => check::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Tools(cmd) => tools::run(cmd),
        Command::Log(cmd) => log::run(cmd),
        Command::Metrics(args) => metrics::run(args),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Reload(args) => reload::run(args),
        Command::Demo(args) => demo::run(args),
        Command::DemoTools(args) => demo_tools::run(args),
        Command::Approvals(cmd) => approvals::run(cmd),
        Command::Receipts(cmd) => receipts::run(cmd),
        Command::Report(args) => report::run(args),
        Command::Tokens(cmd) => tokens::run(cmd),
        Command::Witness(cmd) => witness::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("airlock: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Logs go to stderr, always: in stdio mode stdout is the protocol.
fn init_tracing(default_filter: &str) -> Option<crate::telemetry::Guard> {
    match crate::telemetry::install_logs(default_filter) {
        Ok(guard) => Some(guard),
        Err(error) => {
            eprintln!("airlock: {error}");
            None
        }
    }
}
