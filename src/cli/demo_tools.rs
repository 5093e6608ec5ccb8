//! `airlock demo-tools`: run the built-in demo tool server over stdio.
//!
//! Owns: the command's flags and the tokio runtime it runs on.
//! Uses: `demo_tools::serve_stdio`.
//! Must not: print to stdout (it is the MCP protocol here); logs go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::demo_tools;

/// Arguments of `airlock demo-tools`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder the tools act on; created and seeded on first use
    /// (default: ./airlock-data/sandbox).
    #[arg(long, value_name = "DIR")]
    sandbox: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sandbox = args
        .sandbox
        .unwrap_or_else(|| PathBuf::from(demo_tools::DEFAULT_SANDBOX));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime
        .block_on(demo_tools::serve_stdio(&sandbox))
        .with_context(|| format!("demo-tools (sandbox {})", sandbox.display()))?;
    Ok(ExitCode::SUCCESS)
}
