//! `airlock check`: validate airlock.toml, every tool manifest and every policy file.
//!
//! Owns: the command's flags and its output (one `file:line: message` per problem, or a
//! one-line summary).
//! Uses: `config::Config::load_partial`, `manifest::load_dir`, `policy::PolicySet::load`.
//! Must not: start servers or open the data directory.

use std::process::ExitCode;

use crate::config::Config;
use crate::manifest;
use crate::policy::PolicySet;

/// Arguments of `airlock check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
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
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
