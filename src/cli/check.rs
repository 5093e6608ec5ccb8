//! `airlock check`: validate airlock.toml, every tool manifest and every policy file.
//!
//! Owns: the command's flags and its output (one `file:line: message` per problem, or a
//! one-line summary).
//! Uses: `config::Config::load_partial`, `manifest::load_dir`, `policy::PolicySet::load`.
//! Must not: start servers or open the data directory; change the database (`--connect`
//! only reads its schema version).

use std::process::ExitCode;

use crate::config::Config;
use crate::manifest;
use crate::policy::PolicySet;

/// Arguments of `airlock check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    /// Also reach the storage backend (`[storage]`): connect to PostgreSQL and read its
    /// schema version (changes nothing).
    #[arg(long)]
    connect: bool,
}

/// What `airlock check` found: everything it could load, and every problem (also what a
/// live reload reads, so it reports the same problems).
pub(crate) type Checked = crate::gateway::Sources;

/// Loads the config and what it points at, collecting every problem of every file.
pub(crate) fn load_everything(config: &super::ConfigArg) -> anyhow::Result<Checked> {
    if let Some(path) = config.config.as_ref().filter(|p| !p.is_file()) {
        anyhow::bail!("cannot read {}: no such file", path.display());
    }
    let (config, mut problems) = Config::load_partial(config.config.as_deref());
    let g = &config.gateway;
    let manifests = match manifest::load_dir(&g.manifests, &config.base_dir, &g.separator) {
        Ok(m) => m,
        Err(e) => {
            problems.extend(e);
            Vec::new()
        }
    };
    let policies = match PolicySet::load(&g.policies) {
        Ok(p) => p,
        Err(e) => {
            problems.extend(e);
            PolicySet::empty()
        }
    };
    Ok(Checked {
        config,
        manifests,
        policies,
        problems,
    })
}

#[allow(clippy::print_stdout)]
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let checked = load_everything(&args.config)?;
    if !checked.problems.is_empty() {
        for problem in checked.problems.problems() {
            println!("{problem}");
        }
        let n = checked.problems.problems().len();
        eprintln!(
            "airlock: {n} problem{} found",
            if n == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::from(super::EXIT_FOUND_PROBLEM));
    }
    for warning in checked.policies.warnings() {
        eprintln!("airlock: warning: {warning}");
    }
    let servers: Vec<&str> = checked.manifests.iter().map(|m| m.name.as_str()).collect();
    let files = checked.policies.files().len();
    println!(
        "{}: ok; {} tool manifest{} ({}); {} rule{} in {} policy file{}",
        checked.config.origin(),
        servers.len(),
        plural(servers.len()),
        if servers.is_empty() {
            "none".to_string()
        } else {
            servers.join(", ")
        },
        checked.policies.rules().len(),
        plural(checked.policies.rules().len()),
        files,
        plural(files),
    );
    storage(&checked.config.storage, args.connect)
}

/// Reports the storage backend; with `connect`, reaches PostgreSQL (exit 1 if it cannot).
#[allow(clippy::print_stdout)]
fn storage(storage: &crate::storage::StorageConfig, connect: bool) -> anyhow::Result<ExitCode> {
    let settings = match &storage.backend {
        crate::storage::Backend::Sled => {
            if connect {
                println!("storage: sled, embedded in gateway.data_dir (nothing to connect to)");
            }
            return Ok(ExitCode::SUCCESS);
        }
        crate::storage::Backend::Postgres(settings) => settings,
    };
    if settings.url_env.get().is_none() {
        eprintln!(
            "airlock: warning: storage.url_env names {}, which is not set here; the gateway will not start without it",
            settings.url_env.as_str()
        );
    }
    if !connect {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = super::live::runtime()?;
    match runtime.block_on(crate::storage::schema_status(settings)) {
        Ok(status) => {
            println!("storage: {status}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("storage: FAILED: {e}");
            Ok(ExitCode::from(super::EXIT_FOUND_PROBLEM))
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
