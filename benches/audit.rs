//! Audit log throughput: records/s appended (durability fsync and none, 1/8/64 concurrent
//! writers), one caller's calls/s (a call's two groups, signed twice or once), and
//! records/s verified. Prints the median of several runs.
//!
//! Run: `cargo bench --bench audit` (set `AIRLOCK_BENCH_RUNS` to change the run count).

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use airlock::audit::{
    AuditConfig, AuditLog, Durability, LogPaths, Record, RecordKind, SigningKey, Trust, verify_dir,
};
use serde_json::json;

fn record(writer: usize, i: usize, log: &AuditLog) -> Record {
    let args =
        json!({"path": format!("/srv/data/{writer}/{i}.txt"), "mode": "read", "password": "x"});
    Record::new(RecordKind::CallReceived)
        .principal("alice@example.com")
        .session("4f1c2a9e-7d1b-4c55-9a0e-1f2d3c4b5a69")
        .call_id(format!("{writer}-{i}"))
        .tool("fs__read_file")
        .risk("low")
        .with_args(&args, log.redactor())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The bench's log under `dir`, redacting `/password` like a gateway's would.
fn open_log(dir: &Path, durability: Durability) -> AuditLog {
    let mut cfg = AuditConfig::new(dir);
    cfg.durability = durability;
    cfg.redact = vec!["/password".into()];
    AuditLog::open(cfg).unwrap()
}

/// Appends `per_writer` records from each of `writers` tasks; returns records/s.
fn append_rate(dir: &Path, durability: Durability, writers: usize, per_writer: usize) -> f64 {
    runtime().block_on(async {
        let log = open_log(dir, durability);
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        let _ = log.append(record(w, i, &log)).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        log.close().await.unwrap();
        (writers * per_writer) as f64 / elapsed.as_secs_f64()
    })
}

/// One caller's calls/s: a call's three records before forwarding, then its one after,
/// each group awaited as the gateway does; the first group signed at once (`once` false:
/// two signatures per call) or with the second (`append_all_sign_later`: one).
fn call_rate(dir: &Path, durability: Durability, calls: usize, once: bool) -> f64 {
    runtime().block_on(async {
        let log = open_log(dir, durability);
        let start = Instant::now();
        for i in 0..calls {
            let first: Vec<Record> = (0..3).map(|k| record(k, i, &log)).collect();
            if once {
                log.append_all_sign_later(first).await.unwrap();
            } else {
                log.append_all(first).await.unwrap();
            }
            let _ = log.append(record(3, i, &log)).await.unwrap();
        }
        let elapsed = start.elapsed();
        log.close().await.unwrap();
        calls as f64 / elapsed.as_secs_f64()
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Records/s of a bare sled scan of the same log: the floor under verification.
fn scan_rate(dir: &Path) -> f64 {
    let opened = Instant::now();
    let db = sled::open(dir.join("audit")).unwrap();
    println!(
        "  (sled open alone: {:.0} ms)",
        opened.elapsed().as_secs_f64() * 1e3
    );
    let start = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0usize;
    // One key per group (see `audit::store`): the records are counted by their frames.
    for kv in db.scan_prefix(b"g") {
        let (_, v) = kv.unwrap();
        bytes += v.len();
        let mut at = 0;
        while at < v.len() {
            at += 4 + 32 + u32::from_be_bytes(v[at..at + 4].try_into().unwrap()) as usize;
            n += 1;
        }
    }
    assert!(bytes > 0);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Records/s verified, the log's records and checkpoints, and the cores busy meanwhile
/// (this process's CPU time over the wall time).
fn verify_rate(dir: &Path) -> (f64, u64, u64, f64) {
    let paths = LogPaths::new(dir, None);
    let anchor = SigningKey::load(&paths.key).unwrap().public_key();
    let cpu = cpu_time();
    let start = Instant::now();
    let report = verify_dir(&paths, Trust { anchor }).unwrap().unwrap();
    let elapsed: Duration = start.elapsed();
    let cores = cpu_time().saturating_sub(cpu).as_secs_f64() / elapsed.as_secs_f64();
    let n = report.last.get();
    (n as f64 / elapsed.as_secs_f64(), n, report.checkpoints, cores)
}

/// This process's CPU time so far, user and kernel, all threads (`/proc/self/stat`, in
/// USER_HZ ticks: 100 a second on Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |at| &stat[at + 1..]);
    // After the command name: field 3 (state) first; utime and stime are fields 14 and 15.
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

fn main() {
    let runs: usize = std::env::var("AIRLOCK_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // AIRLOCK_BENCH_VERIFY=DIR only verifies an existing data dir (for profiling).
    if let Ok(dir) = std::env::var("AIRLOCK_BENCH_VERIFY") {
        if !Path::new(&dir).exists() {
            append_rate(Path::new(&dir), Durability::None, 64, 100_000 / 64);
        }
        let rates: Vec<f64> = (0..runs).map(|_| verify_rate(Path::new(&dir)).0).collect();
        println!(
            "verified {dir}: {:.0} records/s (median of {runs})",
            median(rates)
        );
        return;
    }
    println!("audit append (median of {runs} runs, records/s)");
    println!("{:>10} {:>8} {:>14}", "durability", "writers", "records/s");
    // AIRLOCK_BENCH_ONLY=fsync:64 runs one case (for profiling).
    let only = std::env::var("AIRLOCK_BENCH_ONLY").ok();
    let mut verify_dirs = Vec::new();
    let mut durable_64 = None;
    for (name, durability) in [("fsync", Durability::Fsync), ("none", Durability::None)] {
        for writers in [1usize, 8, 64] {
            if only
                .as_ref()
                .is_some_and(|o| *o != format!("{name}:{writers}"))
            {
                continue;
            }
            let total = match (durability, writers) {
                (Durability::Fsync, 1) => 3_000,
                (_, 1) => 20_000,
                _ => 100_000,
            };
            let mut rates = Vec::new();
            for run in 0..runs {
                let dir = tempfile::tempdir().unwrap();
                rates.push(append_rate(
                    dir.path(),
                    durability,
                    writers,
                    total / writers,
                ));
                if run == 0
                    && writers != 8
                    && (matches!(durability, Durability::Fsync) || only.is_some())
                {
                    verify_dirs.push((writers, dir));
                }
            }
            let rate = median(rates);
            if matches!(durability, Durability::Fsync) && writers == 64 {
                durable_64 = Some(rate);
            }
            println!("{name:>10} {writers:>8} {rate:>14.0}");
        }
    }
    if only.as_deref().is_none_or(|o| o == "calls") {
        println!("\none caller's calls (3 records, then 1; median of {runs} runs, calls/s)");
        println!("{:>10} {:>16} {:>16}", "durability", "signed twice", "signed once");
        for (name, durability, calls) in [("fsync", Durability::Fsync, 1_000), ("none", Durability::None, 5_000)] {
            let rate = |once| median((0..runs).map(|_| call_rate(tempfile::tempdir().unwrap().path(), durability, calls, once)).collect());
            println!("{name:>10} {:>16.0} {:>16.0}", rate(false), rate(true));
        }
    }
    println!("\naudit verify (median of {runs} runs)");
    // The target is for the largest log (the 1-writer log is one checkpoint per record).
    let mut verified = None::<(u64, f64, f64)>;
    // Records and checkpoints of the 64-writer `fsync` log: how many records a sync covered.
    let mut durable_shape = None;
    for (writers, dir) in &verify_dirs {
        let mut rates = Vec::new();
        let mut cores = Vec::new();
        let mut shape = (0, 0);
        for _ in 0..runs {
            let (rate, n, cps, busy) = verify_rate(dir.path());
            rates.push(rate);
            cores.push(busy);
            shape = (n, cps);
        }
        let rate = median(rates.clone());
        if verified.is_none_or(|(n, _, _)| shape.0 > n) {
            verified = Some((shape.0, rate, median(cores)));
        }
        if *writers == 64 && durable_64.is_some() {
            durable_shape = Some(shape);
        }
        println!(
            "log of {} records in {} checkpoints (written by {writers} writer(s)): {:.0} records/s verified \
             (bare sled scan: {:.0} records/s)",
            shape.0,
            shape.1,
            median(rates),
            scan_rate(dir.path())
        );
    }
    println!("\ntargets (issue 14; the machine's load shifts these, so read them with `uptime`)");
    target_line("durable records/s at 64 writers (fsync)", durable_64, DURABLE_TARGET);
    if let (Some(rate), Some((records, checkpoints))) = (durable_64, durable_shape) {
        // Every group of an `append` is signed: one checkpoint, one fdatasync per group.
        let per_group = records as f64 / checkpoints.max(1) as f64;
        println!(
            "    measured: groups of {per_group:.1} records, one fdatasync each: {:.0} group commits a second, {:.0} µs a group",
            rate / per_group,
            1e6 * per_group / rate
        );
    }
    target_line("verified records/s (every core, largest log)", verified.map(|(_, r, _)| r), VERIFIED_TARGET);
    if let Some((_, rate, cores)) = verified {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "    measured: {cores:.2} of {cpus} cores busy, {:.2} µs of CPU a record (the target needs at most {:.2})",
            1e6 * cores / rate,
            1e6 * cpus as f64 / VERIFIED_TARGET
        );
    }
}

/// At least this many records/s appended and durable with 64 writers.
const DURABLE_TARGET: f64 = 100_000.0;
/// At least this many records/s verified.
const VERIFIED_TARGET: f64 = 1_000_000.0;

fn target_line(what: &str, measured: Option<f64>, target: f64) {
    match measured {
        Some(rate) => {
            let verdict = if rate >= target { "met" } else { "MISSED" };
            println!("  {what}: {rate:.0} (target >= {target:.0}): {verdict}");
        }
        None => println!("  {what}: not measured in this run (AIRLOCK_BENCH_ONLY)"),
    }
}
