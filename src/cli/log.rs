//! `airlock log …`.

use std::process::ExitCode;

/// Subcommands of `airlock log`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Not built yet.
    List,
}

pub(crate) fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`airlock log` is not built yet")
}
