//! `airlock report`: the evidence of a period as HTML, PDF or JSON.
//!
//! Owns: the command's flags, reading the stopped log, and printing to PDF.
//! Uses: `audit` (verify, read), `report` (gather, render).
//! Must not: write anything but the report file.
//!
//! PDF is the HTML page printed by headless Chromium (`--print-to-pdf`): one renderer for
//! both forms, and no Rust crate lays out HTML tables and SVG into PDF as faithfully. The
//! browser is `AIRLOCK_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
//! `google-chrome` on `PATH`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::audit::{LogPaths, LogReader, PublicKey, Trust, verify_stopped};
use crate::cli::EXIT_FOUND_PROBLEM;
use crate::control::Request;
use crate::report::{Verification, gather, period_of, records_of, render_html};

/// Output forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Html,
    Pdf,
    Json,
}

/// Arguments of `airlock report`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    dir: super::log::DirArgs,
    /// First day of the period, YYYY-MM-DD (UTC; default: the log's first day).
    #[arg(long, value_name = "DATE")]
    from: Option<String>,
    /// Last day of the period, YYYY-MM-DD (UTC; default: today).
    #[arg(long, value_name = "DATE")]
    to: Option<String>,
    /// html (default), pdf or json.
    #[arg(long, value_enum, default_value = "html")]
    format: Format,
    /// Where to write it (default: stdout; required for pdf).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The trusted public key (the output of `airlock keys show`; default: the data dir's key).
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(code) = super::live::runtime()?.block_on(live(&args))? {
        return Ok(code);
    }
    let (data_dir, paths) = args.dir.paths()?;
    let anchor = match &args.pubkey {
        Some(file) => PublicKey::read_file(file)?,
        None => crate::audit::SigningKey::load(&paths.key)
            .with_context(|| "no trusted key: pass --pubkey FILE (the output of `airlock keys show`)")?
            .public_key(),
    };
    // One open for the verification and the records (see `audit::verify_stopped`).
    let reader = LogReader::open(&paths)?;
    let verification = verify(&reader, &paths, anchor, &data_dir, args.pubkey.as_deref());
    let records = records_of(&reader)?;
    drop(reader);
    let period = period_of(&records, args.from, args.to).map_err(anyhow::Error::msg)?;
    let intact = verification.status == "intact";
    let evidence = gather(&records, period, verification, data_dir.display().to_string());
    let document = match args.format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&evidence)?;
            text.push('\n');
            text
        }
        Format::Html | Format::Pdf => render_html(&evidence),
    };
    write_out(&document, args.format, args.out.as_deref())?;
    Ok(exit(intact))
}

fn exit(intact: bool) -> ExitCode {
    if intact { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FOUND_PROBLEM) }
}

/// The report from the data dir's running gateway (which holds the database), if one runs.
async fn live(args: &Args) -> anyhow::Result<Option<ExitCode>> {
    let Some(mut connection) = args.dir.live().await? else { return Ok(None) };
    let pubkey = match &args.pubkey {
        Some(file) => Some(PublicKey::read_file(file)?.to_string()),
        None => None,
    };
    let request = Request::Report { from: args.from.clone(), to: args.to.clone(), json: args.format == Format::Json, pubkey };
    let done = connection.call(&request).await?;
    let Some(document) = done["document"].as_str() else { bail!("the gateway's report is unreadable") };
    let mut document = document.to_owned();
    if args.format == Format::Json {
        document.push('\n');
    }
    write_out(&document, args.format, args.out.as_deref())?;
    Ok(Some(exit(done["intact"].as_bool() == Some(true))))
}

fn verify(reader: &LogReader, paths: &LogPaths, anchor: PublicKey, data_dir: &Path, pubkey: Option<&Path>) -> Verification {
    let reverify = match pubkey {
        Some(k) => format!("airlock log verify --data-dir {} --pubkey {}", data_dir.display(), k.display()),
        None => format!("airlock log verify --data-dir {}", data_dir.display()),
    };
    Verification::of(verify_stopped(reader, paths, Trust { anchor }), reverify)
}

/// Writes the rendered report (HTML or JSON text); PDF prints the HTML.
fn write_out(document: &str, format: Format, out: Option<&Path>) -> anyhow::Result<()> {
    if format == Format::Pdf {
        let Some(out) = out else { bail!("--format pdf needs --out FILE") };
        return print_pdf(document, out);
    }
    let bytes = document.as_bytes();
    match out {
        Some(path) => std::fs::write(path, bytes).with_context(|| format!("could not write {}", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes)?;
            Ok(stdout.flush()?)
        }
    }
}

fn chromium() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("AIRLOCK_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(found) = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()) {
            return Ok(found);
        }
    }
    bail!("--format pdf prints with headless Chromium, and none was found: install `chromium` or set AIRLOCK_CHROMIUM")
}

fn print_pdf(html: &str, out: &Path) -> anyhow::Result<()> {
    let browser = chromium()?;
    let work = std::env::temp_dir().join(format!("airlock-report-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work).with_context(|| format!("could not create {}", work.display()))?;
    let printed = print_in(&browser, &work, html, out);
    let _ = std::fs::remove_dir_all(&work);
    printed
}

fn print_in(browser: &Path, work: &Path, html: &str, out: &Path) -> anyhow::Result<()> {
    let page = work.join("report.html");
    std::fs::write(&page, html)?;
    let out_abs = std::path::absolute(out)?;
    let status = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--no-pdf-header-footer"])
        .arg(format!("--user-data-dir={}", work.join("profile").display()))
        .arg(format!("--print-to-pdf={}", out_abs.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("could not run {}", browser.display()))?;
    if !status.success() || !out_abs.is_file() {
        bail!("{} could not print the report ({status})", browser.display());
    }
    Ok(())
}
