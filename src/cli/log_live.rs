//! `airlock log …` through the running gateway of the data dir (the control socket's
//! `log_*` requests): the same output as on the files.
//!
//! Owns: turning a `log` command into its request and printing the answer.
//! Uses: `cli::live`, `control::Request`.
//! Must not: open the log's files (the gateway holds them).

#![allow(clippy::print_stdout)] // printing records and results is the point of these commands

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::audit::{PublicKey, Seq};
use crate::cli::EXIT_FOUND_PROBLEM;
use crate::cli::live::{line_of, stream};
use crate::cli::log::{Command, DirArgs, export_start, print_line};
use crate::control::{Connection, Request};

/// Runs `cmd` on the gateway of `dir`; `None` when no gateway runs there.
pub(crate) async fn run(dir: &DirArgs, cmd: &Command) -> anyhow::Result<Option<ExitCode>> {
    let Some(mut connection) = dir.live().await? else { return Ok(None) };
    let print = |item: Value| print_line(line_of(&item)?.as_bytes());
    let code = match cmd {
        Command::Verify { pubkey, trusted, witness_key, .. } => {
            if !trusted.is_empty() || !witness_key.is_empty() || dir.witness_keys().map(|k| !k.is_empty()).unwrap_or(false) {
                bail!(
                    "a gateway is running for {}: over its socket `log verify` checks the chain, the records and every checkpoint signature; --trusted checkpoints and witness cosignatures are checked on the files (stop the gateway first, or check an export: `log export --out F`, then `log verify --export F`)",
                    dir.paths()?.0.display()
                );
            }
            let pubkey = match pubkey {
                Some(file) => Some(PublicKey::read_file(file)?.to_string()),
                None => None,
            };
            let done = connection.call(&Request::LogVerify { pubkey }).await?;
            verify_outcome(&done)
        }
        Command::Checkpoint { .. } => {
            let done = connection.call(&Request::LogCheckpoint).await?;
            match done["note"].as_str() {
                Some(note) => print!("{note}"),
                None => bail!("the latest checkpoint ({} records) predates signed notes", done["size"]),
            }
            ExitCode::SUCCESS
        }
        Command::Show { seq, .. } => {
            let done = connection.call(&Request::LogShow { seq: seq.get() }).await?;
            print_line(line_of(&done)?.as_bytes())?;
            ExitCode::SUCCESS
        }
        Command::Tail { lines, follow, .. } => {
            stream(&mut connection, &Request::LogTail { lines: *lines, follow: *follow }, print).await?;
            ExitCode::SUCCESS
        }
        Command::Export { since, after, follow, out, format, .. } => {
            let since = export_start(*since, after.map(Seq::get));
            // OCSF events are made here, by the function the offline export and the sink
            // use; the gateway streams the stored lines either way.
            let ocsf = match crate::feed::Format::parse(format).unwrap_or_default() {
                crate::feed::Format::Ocsf => Some(log_origin(&mut connection).await?),
                crate::feed::Format::Jsonl => None,
            };
            let mut sink: Box<dyn Write> = match out {
                Some(path) => Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut sink = BufWriter::new(&mut sink);
            let (mut lines, mut checkpoints) = (0u64, 0u64);
            let request = Request::LogExport { since: Some(since.get()), follow: *follow };
            stream(&mut connection, &request, |item| {
                let line = line_of(&item)?;
                lines += 1;
                if crate::audit::Checkpoint::from_slice(line.as_bytes()).is_some() {
                    checkpoints += 1;
                }
                if let Some(origin) = &ocsf {
                    if lines == 1 || crate::audit::Checkpoint::from_slice(line.as_bytes()).is_some() {
                        return Ok(()); // the export header and checkpoints are not events
                    }
                    let event = crate::feed::Format::Ocsf.line(line.as_bytes(), origin).context("an exported record")?;
                    sink.write_all(&event)?;
                    sink.write_all(b"\n")?;
                    if *follow {
                        sink.flush()?;
                    }
                    return Ok(());
                }
                sink.write_all(line.as_bytes())?;
                sink.write_all(b"\n")?;
                // A follower's reader sees each group when it is committed.
                if *follow {
                    sink.flush()?;
                }
                Ok(())
            })
            .await?;
            sink.flush()?;
            // Every line but the header and the checkpoints is a record.
            eprintln!("exported {} records from seq {since}", lines.saturating_sub(1 + checkpoints));
            ExitCode::SUCCESS
        }
        Command::Prove { seq, consistency, to, .. } => {
            let request = Request::LogProve { seq: seq.map(|s| s.get()), consistency: *consistency, to: *to };
            let done = connection.call(&request).await?;
            println!("{}", serde_json::to_string_pretty(&done)?);
            ExitCode::SUCCESS
        }
        Command::CheckProof { .. } => return Ok(None),
    };
    Ok(Some(code))
}

/// The log's origin (the first line of its latest signed note), as OCSF events name it.
async fn log_origin(connection: &mut Connection) -> anyhow::Result<String> {
    let done = connection.call(&Request::LogCheckpoint).await?;
    Ok(done["note"].as_str().and_then(|note| note.lines().next()).unwrap_or("airlock").to_owned())
}

/// Prints a `log_verify` answer as the offline verification prints its outcome.
fn verify_outcome(done: &Value) -> ExitCode {
    if done["intact"].as_bool() == Some(true) {
        for warning in done["warnings"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            eprintln!("airlock: warning: {warning}");
        }
        println!("{} (verified by the running gateway: what is durable now)", done["summary"].as_str().unwrap_or(""));
        ExitCode::SUCCESS
    } else {
        println!("FAILED at {}", done["failure"].as_str().unwrap_or("an unreadable failure"));
        ExitCode::from(EXIT_FOUND_PROBLEM)
    }
}
