//! `airlock serve`.

use std::process::ExitCode;

/// Arguments of `airlock serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`airlock serve` is not built yet")
}
