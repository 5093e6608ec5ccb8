//! `airlock explain`.

use std::process::ExitCode;

/// Arguments of `airlock explain`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`airlock explain` is not built yet")
}
