//! `airlock keys …`.

use std::process::ExitCode;

/// Subcommands of `airlock keys`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Not built yet.
    List,
}

pub(crate) fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`airlock keys` is not built yet")
}
