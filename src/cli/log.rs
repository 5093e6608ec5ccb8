//! `airlock log …`: verify, show, tail, export and prove: through the running gateway of
//! the data dir when one runs (`cli::live`), else on its files.
//!
//! Owns: the `log` subcommands and where they find the data directory.
//! Uses: `audit` (reader, verification, proofs).
//! Must not: write to the log.

#![allow(clippy::print_stdout)] // printing records and results is the point of these commands

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::audit::{
    LogPaths, LogReader, PublicKey, Seq, Trust, VerifyReport, check_proof,
    verify_export,
};
use crate::cli::{ConfigArg, EXIT_FOUND_PROBLEM};

/// Where the log is: `--data-dir`, else `[gateway] data_dir` of the config, else `airlock-data`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DirArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The gateway's data directory (overrides the config).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The signing key file (default: `[audit] key_path`, else DATA_DIR/audit-key).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

impl DirArgs {
    /// The log's paths and the data directory they came from.
    pub(crate) fn paths(&self) -> anyhow::Result<(PathBuf, LogPaths)> {
        let (cfg_dir, cfg_key) = read_config(self.config.config.as_deref())?;
        let data_dir = self
            .data_dir
            .clone()
            .or(cfg_dir)
            .unwrap_or_else(|| PathBuf::from("airlock-data"));
        let key = self.key.clone().or(cfg_key);
        let paths = LogPaths::new(&data_dir, key.as_deref());
        Ok((data_dir, paths))
    }
}

impl DirArgs {
    /// The running gateway of this data dir, or `None`. The hello names the config file
    /// unless `--data-dir` chose the directory (then any gateway of it answers).
    pub(crate) async fn live(&self) -> anyhow::Result<Option<crate::control::Connection>> {
        let (data_dir, _) = self.paths()?;
        let config = match (&self.data_dir, self.config.config.as_deref()) {
            (Some(_), _) => None,
            (None, Some(path)) => Some(path.canonicalize().unwrap_or_else(|_| path.to_path_buf())),
            (None, None) => {
                let default = Path::new(crate::config::DEFAULT_FILE);
                default.exists().then(|| default.canonicalize().unwrap_or_else(|_| default.to_path_buf()))
            }
        };
        super::live::connect(&data_dir, config).await
    }

    /// The witness keys of `[[audit.witness.http]]` in the config, if there is one.
    pub(crate) fn witness_keys(&self) -> anyhow::Result<Vec<String>> {
        let explicit = self.config.config.as_deref();
        if explicit.is_none() && !Path::new(crate::config::DEFAULT_FILE).exists() {
            return Ok(Vec::new());
        }
        let config = crate::config::Config::load(explicit).map_err(|problems| anyhow::anyhow!("{problems}"))?;
        Ok(config.audit.witness.map(|w| w.http.into_iter().map(|h| h.key).collect()).unwrap_or_default())
    }
}

/// `[gateway] data_dir` and `[audit] key_path` from the config (resolved against its
/// directory), if there is one.
fn read_config(explicit: Option<&Path>) -> anyhow::Result<(Option<PathBuf>, Option<PathBuf>)> {
    Ok(load_config(explicit)?.map_or((None, None), |c| (Some(c.gateway.data_dir), c.audit.key_path)))
}

/// The config file, if one is given or `./airlock.toml` exists.
fn load_config(explicit: Option<&Path>) -> anyhow::Result<Option<crate::config::Config>> {
    if explicit.is_none() && !Path::new(crate::config::DEFAULT_FILE).exists() {
        return Ok(None);
    }
    let config = crate::config::Config::load(explicit).map_err(|problems| anyhow::anyhow!("{problems}"))?;
    Ok(Some(config))
}

impl DirArgs {
    /// The PostgreSQL settings when `[storage]` keeps the log there (`--data-dir` alone
    /// never switches to it: the config decides where the log is).
    pub(crate) fn shared_log(&self) -> anyhow::Result<Option<crate::storage::PgSettings>> {
        Ok(load_config(self.config.config.as_deref())?.and_then(|c| match c.storage.backend {
            crate::storage::Backend::Postgres(settings) => Some(settings),
            crate::storage::Backend::Sled => None,
        }))
    }

    /// A reader of the log: the shared database's when `[storage]` says postgres, else the
    /// data dir's sled database (`AuditError::Locked` while a gateway has it open).
    pub(crate) fn open_log(&self) -> anyhow::Result<Result<LogReader, crate::audit::AuditError>> {
        match self.shared_log()? {
            Some(settings) => Ok(crate::storage::open_reader(&settings)),
            None => {
                let (_, paths) = self.paths()?;
                Ok(LogReader::open(&paths))
            }
        }
    }
}

/// Subcommands of `airlock log`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Check every record, checkpoint signature and the chain; exit 1 at the first bad seq.
    Verify {
        #[command(flatten)]
        dir: DirArgs,
        /// Trusted public key (base64/hex, or `airlock keys show` output); default: the key file.
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
        /// Verify an export file instead of the database.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// Checkpoints kept elsewhere (notes one after another, as `log checkpoint` prints
        /// them, or a directory of `.note` files); exit 1 unless the log extends each.
        #[arg(long, value_name = "FILE")]
        trusted: Vec<PathBuf>,
        /// A witness verifier key (`name+hash+base64`) whose cosignatures to check.
        #[arg(long, value_name = "VKEY")]
        witness_key: Vec<String>,
    },
    /// Print the latest checkpoint as a C2SP signed note (what an auditor keeps).
    Checkpoint {
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Print one record.
    Show {
        seq: Seq,
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Print the last records (one JSON object a line).
    Tail {
        #[command(flatten)]
        dir: DirArgs,
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
        /// Keep printing new records (polls; waits while a gateway holds the database).
        #[arg(short, long)]
        follow: bool,
    },
    /// Write records and checkpoints as JSONL, checkable by `log verify --export`; or
    /// records as OCSF events; with --follow keep writing new records as they appear.
    Export {
        #[command(flatten)]
        dir: DirArgs,
        /// `jsonl`: the export header, the stored records and their checkpoints (with
        /// --follow too); `ocsf`: one OCSF 1.7.0 event per record.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "ocsf"])]
        format: String,
        /// First sequence number to export.
        #[arg(long, value_name = "SEQ", conflicts_with = "after")]
        since: Option<Seq>,
        /// Export the records after this sequence number (resume where a reader stopped).
        #[arg(long, value_name = "SEQ")]
        after: Option<Seq>,
        /// Keep writing new records (polls the data directory; waits while a gateway holds it).
        #[arg(short, long)]
        follow: bool,
        /// Write to FILE instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print an inclusion proof of record SEQ against the latest checkpoint, or with
    /// --consistency a proof that the log extends its checkpoint of OLD records.
    Prove {
        #[arg(required_unless_present = "consistency")]
        seq: Option<Seq>,
        /// Prove that the checkpoint of this many records is a prefix of a later one.
        #[arg(long, value_name = "OLD_SIZE", conflicts_with = "seq")]
        consistency: Option<u64>,
        /// The later checkpoint's size (default: the latest).
        #[arg(long, value_name = "NEW_SIZE", requires = "consistency")]
        to: Option<u64>,
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Check a proof printed by `log prove` with the public key alone.
    CheckProof {
        /// The proof file (`-` for stdin).
        proof: PathBuf,
        /// The signer's public key.
        #[arg(long, value_name = "FILE")]
        pubkey: PathBuf,
        /// For a consistency proof: the older checkpoint you kept (a note file).
        #[arg(long, value_name = "FILE")]
        old: Option<PathBuf>,
        /// For a consistency proof: the newer checkpoint (a note file).
        #[arg(long, value_name = "FILE")]
        new: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    if let Some(dir) = cmd.dir()
        && let Some(code) = super::live::runtime()?.block_on(super::log_live::run(dir, &cmd))?
    {
        return Ok(code);
    }
    match cmd {
        Command::Verify {
            dir,
            pubkey,
            export,
            trusted,
            witness_key,
        } => {
            let (_, paths) = dir.paths()?;
            let anchor = anchor_key(&paths, pubkey.as_deref())?;
            match export {
                Some(file) => verify_export_file(file.as_path(), anchor),
                None if dir.shared_log()?.is_some() => super::log_trust::verify_shared(&dir, anchor),
                None => super::log_trust::verify_dir(&dir, &paths, anchor, &trusted, &witness_key),
            }
        }
        Command::Checkpoint { dir } => {
            let cp = open_reader(&dir)?.latest_checkpoint()?;
            match cp.to_note() {
                Some(note) => {
                    print!("{note}");
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!(
                    "the latest checkpoint ({} records) predates signed notes; start the gateway once to write one",
                    cp.size
                ),
            }
        }
        Command::Show { seq, dir } => {
            let reader = open_reader(&dir)?;
            let bytes = reader.get(seq)?;
            print_line(&bytes)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail { dir, lines, follow } => tail(&dir, lines, follow),
        Command::Export { dir, format, since, after, follow, out } => {
            let format = crate::feed::Format::parse(&format).unwrap_or_default();
            let from = match (after, since) {
                (Some(after), _) => Seq::new(after.get() + 1),
                (None, Some(since)) => since,
                (None, None) => Seq::new(1),
            };
            super::log_export::export(&dir, format, from, follow, out.as_deref())
        }
        Command::Prove { seq, consistency, to, dir } => {
            let reader = open_reader(&dir)?;
            let value = match (consistency, seq) {
                (Some(old), _) => reader.consistency(old, to)?.to_value(),
                (None, Some(seq)) => reader.prove(seq)?.to_value(),
                (None, None) => bail!("give SEQ or --consistency OLD_SIZE"),
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckProof { proof, pubkey, old, new } => {
            let key = PublicKey::read_file(&pubkey)?;
            let text = if proof.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&proof)
                    .with_context(|| format!("reading {}", proof.display()))?
            };
            let value: serde_json::Value =
                serde_json::from_str(&text).context("the proof is not JSON")?;
            if value.get("kind").and_then(serde_json::Value::as_str) == Some("consistency") {
                return super::log_trust::check_consistency_proof(&value, &key, old.as_deref(), new.as_deref());
            }
            match check_proof(&value, &key) {
                Ok(seq) => {
                    println!("ok: record {seq} is in the log signed by key {}", key.id());
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    println!("FAILED: {why}");
                    Ok(ExitCode::from(EXIT_FOUND_PROBLEM))
                }
            }
        }
    }
}

impl Command {
    /// The data dir a command reads (none for `check-proof`, which needs no log).
    fn dir(&self) -> Option<&DirArgs> {
        match self {
            Command::Verify { dir, export: None, .. }
            | Command::Checkpoint { dir }
            | Command::Show { dir, .. }
            | Command::Tail { dir, .. }
            | Command::Export { dir, .. }
            | Command::Prove { dir, .. } => Some(dir),
            Command::Verify { export: Some(_), .. } | Command::CheckProof { .. } => None,
        }
    }
}

/// The first record of an export: `--since`, else the one after `--after`, else 1.
pub(crate) fn export_start(since: Option<Seq>, after: Option<u64>) -> Seq {
    since.unwrap_or_else(|| Seq::new(after.map_or(1, |a| a.saturating_add(1))))
}

pub(crate) fn open_reader(dir: &DirArgs) -> anyhow::Result<LogReader> {
    Ok(dir.open_log()??)
}

/// One record as a line for a person: its canonical JSON with bidi overrides, C1 controls
/// and line separators written `\uXXXX` (still JSON, decoding to the same record).
pub(crate) fn print_line(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let text = String::from_utf8_lossy(bytes);
    out.write_all(crate::text::for_people(&text).as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// The trusted key: `--pubkey FILE`, else the local key file.
pub(crate) fn anchor_key(paths: &LogPaths, pubkey: Option<&Path>) -> anyhow::Result<PublicKey> {
    Ok(match pubkey {
        Some(file) => PublicKey::read_file(file)?,
        None => crate::audit::SigningKey::load(&paths.key)
            .with_context(
                || "no trusted key: pass --pubkey FILE (the output of `airlock keys show`)",
            )?
            .public_key(),
    })
}

fn verify_export_file(file: &Path, anchor: PublicKey) -> anyhow::Result<ExitCode> {
    match verify_export(file, Trust { anchor })? {
        Ok(report) => {
            print_report(&report);
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            println!("FAILED at {failure}");
            Ok(ExitCode::from(EXIT_FOUND_PROBLEM))
        }
    }
}

/// The one-line summary of an intact log (and its warnings on stderr).
pub(crate) fn print_report(report: &VerifyReport) {
    for w in &report.warnings {
        eprintln!("airlock: warning: {w}");
    }
    println!("{}", report.summary());
}

fn tail(dir: &DirArgs, lines: u64, follow: bool) -> anyhow::Result<ExitCode> {
    let mut next: Option<u64> = None;
    super::log_export::poll_dir(dir, follow, |reader| {
        let from = match next {
            Some(n) => n,
            None => reader.last_seq()?.get().saturating_sub(lines) + 1,
        };
        let mut printed = from;
        for item in reader.records_from(Seq::new(from)) {
            let (seq, bytes) = item?;
            print_line(&bytes)?;
            printed = seq.get() + 1;
        }
        next = Some(printed);
        Ok(())
    })
}
