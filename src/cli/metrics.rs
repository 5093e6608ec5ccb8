//! `airlock metrics`: the running gateway's metrics in the Prometheus text format, read over
//! its control socket (a gateway serving only stdio has no HTTP listener to scrape).
//!
//! Owns: printing the `metrics` request's answer.
//! Uses: `control` (the client side), `gateway::Target` (which gateway).
//! Must not: read anything but the socket (metrics live in the gateway's memory).

#![allow(clippy::print_stdout)] // the exposition is the output

use std::process::ExitCode;

use anyhow::Context;

use crate::control::{self, ControlError, Request};

/// `airlock metrics`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: super::gateway::Target,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (data_dir, config) = args.target.resolve()?;
    super::live::runtime()?.block_on(async {
        let mut connection = match control::connect_op(&data_dir, config).await {
            Ok(connection) => connection,
            Err(ControlError::NotRunning(_)) => {
                eprintln!(
                    "airlock: no gateway is running for {}: metrics live in the running gateway's memory (start one with `airlock gateway start`, or let a client launch `airlock serve`)",
                    data_dir.display()
                );
                return Ok(ExitCode::from(super::EXIT_FOUND_PROBLEM));
            }
            Err(error) => return Err(anyhow::Error::new(error).context(format!("the gateway of {}", data_dir.display()))),
        };
        let done = connection.call(&Request::Metrics).await?;
        let text = done["text"].as_str().context("the gateway's metrics answer has no text")?;
        print!("{text}");
        Ok(ExitCode::SUCCESS)
    })
}
