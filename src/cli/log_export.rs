//! `airlock log export`: JSONL with checkpoints, OCSF events, and `--follow` from a data dir.
//!
//! Owns: the export command's output and its polling of a stopped gateway's data directory.
//! Uses: `audit::LogReader`, `feed::Format`.
//! Must not: write to the log.
//!
//! `--follow` reads the data directory, so it sees records while no gateway holds the
//! database (sled locks it): it prints what is there, then polls, waiting while a gateway
//! runs. Following a running gateway goes through its control socket, which serves the same
//! lines: both write `feed::follow::ExportCursor`'s (header, records, checkpoints).

#![allow(clippy::print_stdout)] // the export is the output

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use super::log::DirArgs;
use crate::audit::{AuditError, LogReader, Seq};
use crate::feed::Format;
use crate::feed::follow::ExportCursor;

/// How often `--follow` looks at the data directory again.
const POLL: Duration = Duration::from_millis(500);

pub(super) fn export(dir: &DirArgs, format: Format, from: Seq, follow: bool, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let sink: Box<dyn Write> = match out {
        Some(path) => Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::new(sink);
    if follow {
        return follow_dir(dir, format, from, &mut sink);
    }
    let reader = super::log::open_reader(dir)?;
    let n = match format {
        Format::Jsonl => reader.export(from, &mut sink)?,
        Format::Ocsf => write_records(&reader, format, from, &mut sink)?.0,
    };
    sink.flush()?;
    eprintln!("exported {n} records from seq {from}");
    Ok(ExitCode::SUCCESS)
}

/// Writes the records from `from` as lines; returns how many and the next seq.
fn write_records(reader: &LogReader, format: Format, from: Seq, out: &mut dyn Write) -> anyhow::Result<(u64, Seq)> {
    let origin = match reader.latest_checkpoint() {
        Ok(cp) => cp.origin,
        Err(AuditError::NoCheckpoint(_)) => "airlock".to_owned(),
        Err(e) => return Err(e.into()),
    };
    let mut n = 0;
    let mut next = from;
    for item in reader.records_from(from) {
        let (seq, bytes) = item?;
        let line = format.line(&bytes, &origin).with_context(|| format!("record {seq}"))?;
        out.write_all(&line)?;
        out.write_all(b"\n")?;
        n += 1;
        next = Seq::new(seq.get() + 1);
    }
    Ok((n, next))
}

fn follow_dir(dir: &DirArgs, format: Format, mut next: Seq, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    // JSONL: the header and checkpoints too, exactly as over the socket, so the output
    // verifies with `log verify --export` like a one-off export.
    let mut cursor: Option<ExportCursor> = None;
    poll_dir(dir, true, |reader| {
        match (format, cursor.as_mut()) {
            (Format::Ocsf, _) => next = write_records(reader, format, next, out)?.1,
            (Format::Jsonl, None) => {
                let (started, bytes) = ExportCursor::start(reader, next)?;
                out.write_all(&bytes)?;
                cursor = Some(started);
            }
            (Format::Jsonl, Some(cursor)) => out.write_all(&cursor.more(reader, u64::MAX)?)?,
        }
        out.flush()?;
        Ok(())
    })
}

/// Calls `step` with a reader of the data directory; with `follow`, again every `POLL`,
/// waiting while a gateway holds the database or no log exists yet. Each reader is dropped
/// before the wait, which releases the lock so a gateway can start meanwhile.
pub(super) fn poll_dir(dir: &DirArgs, follow: bool, mut step: impl FnMut(&LogReader) -> anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    let mut told = false;
    loop {
        match dir.open_log()? {
            Ok(reader) => {
                told = false;
                step(&reader)?;
            }
            Err(AuditError::Locked(path)) if follow => {
                if !told {
                    eprintln!("airlock: {} is in use by a running gateway; waiting for it to stop", path.display());
                    told = true;
                }
            }
            Err(AuditError::NoLog(path)) if follow => {
                if !told {
                    eprintln!("airlock: no audit log at {} yet; waiting", path.display());
                    told = true;
                }
            }
            Err(e) => bail!(e),
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(POLL);
    }
}
