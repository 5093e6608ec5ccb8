//! The disk floor: p50 of a bare `fdatasync` after a small append, on the disk the Airlock
//! targets keep their data dir on (the bench's scratch folder). The `fsync` targets are
//! judged against it: a call needs two durable group commits, so its budget is two of these.
//!
//! Owns: the measurement (a zero-filled file, 256-byte writes into it, one `fdatasync` each:
//! the same pattern as the audit journal, so the file's size never changes per sync).
//! Uses: std only.
//! Must not: write outside the folder it is given.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::stats::Samples;

/// `n` timed `write + fdatasync` pairs in `dir`.
pub(crate) fn fdatasync_floor(dir: &Path, n: usize) -> std::io::Result<Samples> {
    let path = dir.join("fdatasync-floor");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
    let line = [b'x'; 256];
    let size = (n as u64 + 1) * line.len() as u64;
    file.write_all_at(&vec![0u8; usize::try_from(size).unwrap_or(0)], 0)?;
    file.sync_all()?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let start = Instant::now();
        file.write_all_at(&line, i * line.len() as u64)?;
        file.sync_data()?;
        times.push(start.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Samples::new(times))
}
