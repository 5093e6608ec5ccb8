//! `airlock tools …`.

use std::process::ExitCode;

/// Subcommands of `airlock tools`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Not built yet.
    List,
}

pub(crate) fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`airlock tools` is not built yet")
}
