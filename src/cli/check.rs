//! `airlock check`.

use std::process::ExitCode;

/// Arguments of `airlock check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`airlock check` is not built yet")
}
