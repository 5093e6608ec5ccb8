//! `airlock demo-tools`.

use std::process::ExitCode;

/// Arguments of `airlock demo-tools`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`airlock demo-tools` is not built yet")
}
