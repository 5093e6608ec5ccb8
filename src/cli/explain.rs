//! `airlock explain TOOL --args JSON`: the policy decision for a call, without calling it;
//! `--resource URI` and `--prompt NAME [--args JSON]` explain a read the same way.
//!
//! Owns: the command's flags, how it picks the risk and the caller when not given, and
//! its output.
//! Uses: `check::load_everything`, `risk::assign`, `policy::PolicySet::decide` and its
//! limits.
//! Must not: call any tool (it starts the downstreams only to read their tool lists).

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::gateway::fingerprints::{FirstSight, Fingerprints};
use crate::manifest::Manifest;
use crate::policy::{CallFacts, Subject};
use crate::risk::{self, Risk, RiskInputs, RiskSource};

/// Arguments of `airlock explain`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    /// The exposed tool name, e.g. demo__delete_bucket.
    #[arg(required_unless_present_any = ["resource", "prompt"], conflicts_with_all = ["resource", "prompt"])]
    tool: Option<String>,
    /// Explain `resources/read` (and `resources/subscribe`) of this URI instead of a tool call.
    #[arg(long, value_name = "URI", conflicts_with = "prompt")]
    resource: Option<String>,
    /// Explain `prompts/get` of this exposed prompt name (with `--args` as its arguments).
    #[arg(long, value_name = "NAME")]
    prompt: Option<String>,
    /// The call's (or prompt's) arguments as a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    args: String,
    /// The caller (default: identity.stdio_principal).
    #[arg(long = "as", value_name = "PRINCIPAL")]
    principal: Option<String>,
    /// The caller's groups, comma-separated (default: those of a token with that name).
    #[arg(long, value_name = "G1,G2", value_delimiter = ',')]
    groups: Option<Vec<String>>,
    /// The tool's risk (default: as the gateway would classify it).
    #[arg(long, value_name = "LEVEL")]
    risk: Option<Risk>,
    /// Do not start the downstreams: classify from the manifest alone (no annotations).
    #[arg(long)]
    offline: bool,
}

#[allow(clippy::print_stdout)]
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let checked = super::check::load_everything(&args.config)?;
    if !checked.problems.is_empty() {
        anyhow::bail!(
            "the configuration has problems; run `airlock check`:\n{}",
            checked.problems
        );
    }
    let call_args: serde_json::Value = serde_json::from_str(&args.args)
        .context("--args must be JSON, e.g. '{\"path\":\"/etc/x\"}'")?;
    if !call_args.is_object() {
        anyhow::bail!("--args must be a JSON object");
    }
    let config = &checked.config;
    let principal = args
        .principal
        .or_else(|| config.identity.stdio_principal.resolve())
        .unwrap_or_else(|| "stdio".to_string());
    let groups = args
        .groups
        .unwrap_or_else(|| token_groups(config, &principal));
    let (subject, name, call_args) = match (&args.tool, &args.resource, &args.prompt) {
        (_, Some(uri), _) => (Subject::Resource, uri.clone(), serde_json::json!({"uri": uri})),
        (_, _, Some(prompt)) => (Subject::Prompt, prompt.clone(), call_args),
        (Some(tool), _, _) => (Subject::Tool, tool.clone(), call_args),
        (None, None, None) => anyhow::bail!("name a tool, or give --resource URI or --prompt NAME"),
    };
    let found = match (subject, args.risk, args.offline) {
        (Subject::Resource, None, offline) => super::explain_reads::resource_risk(&name, &checked, offline)?,
        (Subject::Prompt, None, _) => super::explain_reads::prompt_risk(&name, &checked.manifests, config),
        (Subject::Tool, None, false) => live_risk(&name, &checked)?,
        _ => manifest_only_risk(&name, &checked.manifests, config),
    };
    let (risk, source) = match args.risk {
        Some(r) => (r, "given with --risk".to_string()),
        None => (found.risk, found.source.to_string()),
    };
    let facts = CallFacts {
        subject,
        tool: &name,
        risk,
        args: &call_args,
        principal: &principal,
        groups: &groups,
    };
    let decision = checked.policies.decide(&facts);
    println!(
        "caller: {principal} (groups: {})",
        if groups.is_empty() {
            "none".into()
        } else {
            groups.join(", ")
        }
    );
    println!("risk source: {source}");
    if let Some(note) = found.note {
        println!("note: {note}");
    }
    print!("{}", decision.explain());
    // Limits count tool calls; reads are not limited.
    let limits: Vec<_> = checked
        .policies
        .limits()
        .iter()
        .filter(|l| subject == Subject::Tool && l.applies(&name, &principal, &groups))
        .collect();
    if limits.is_empty() {
        println!("rate limits: none apply");
    }
    for limit in limits {
        println!(
            "rate limit: \"{}\" ({}) {} per caller, burst {}",
            limit.id, limit.location, limit.rate, limit.burst
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn token_groups(config: &Config, principal: &str) -> Vec<String> {
    config
        .identity
        .tokens
        .iter()
        .find(|t| t.name == principal)
        .map(|t| t.groups.clone())
        .unwrap_or_default()
}

/// The risk the running gateway would give the tool: the downstreams are started (no tool
/// is called) to read their annotations, and the fingerprint state is consulted when no
/// gateway holds it.
fn live_risk(tool: &str, checked: &super::check::Checked) -> anyhow::Result<OfflineRisk> {
    let catalog = super::wiring::live_catalog(checked)?;
    let Some(entry) = catalog.get(tool) else {
        let mut offline = manifest_only_risk(tool, &checked.manifests, &checked.config);
        offline.note = Some(format!("no running downstream serves \"{tool}\": the gateway would answer \"unknown tool\""));
        return Ok(offline);
    };
    let data_dir = &checked.config.gateway.data_dir;
    let changed = match Fingerprints::open(data_dir) {
        Ok(store) => store
            .check(entry.server.name(), tool, &entry.tool, FirstSight::Trust)
            .map(|o| o.status.is_untrusted())
            .unwrap_or(false),
        Err(_) => false,
    };
    Ok(if changed {
        OfflineRisk {
            risk: Risk::Critical,
            source: RiskSource::FingerprintChanged.describe(),
            note: Some(format!("{tool} changed since accepted: calls need approval whatever the rules say")),
        }
    } else {
        OfflineRisk { risk: entry.risk, source: entry.risk_source.describe(), note: None }
    })
}

/// A tool's risk as far as the files tell, and anything the reader should know.
pub(super) struct OfflineRisk {
    pub(super) risk: Risk,
    pub(super) source: &'static str,
    pub(super) note: Option<String>,
}

/// The risk from the manifest alone: its `[tools.<name>]` entry, then `default_risk`, then
/// high. Annotations and fingerprint drift live in the running gateway's catalog, which
/// this command does not start.
///
/// LEAD: to use annotation-derived risk and the fingerprint state, replace this with a
/// lookup in the live catalog / the fingerprint store and keep the same result type.
fn manifest_only_risk(tool: &str, manifests: &[Manifest], config: &Config) -> OfflineRisk {
    let g = &config.gateway;
    let hit = if g.prefix_tools {
        tool.split_once(g.separator.as_str())
            .and_then(|(server, name)| {
                manifests
                    .iter()
                    .find(|m| m.name.as_str() == server)
                    .map(|m| (m, name))
            })
    } else {
        manifests
            .iter()
            .find(|m| m.tools.contains_key(tool))
            .map(|m| (m, tool))
    };
    let Some((manifest, name)) = hit else {
        let (risk, source) = risk::assign(&RiskInputs::default());
        let note = format!(
            "no manifest defines the server of \"{tool}\"; the running gateway would call it an unknown tool"
        );
        return OfflineRisk {
            risk,
            source: source.describe(),
            note: Some(note),
        };
    };
    let inputs = RiskInputs {
        manifest_entry: manifest.tool_risk(name),
        manifest_default: manifest.default_risk,
        ..RiskInputs::default()
    };
    let (risk, source) = risk::assign(&inputs);
    let note = if manifest.is_hidden(name) {
        Some(format!(
            "\"{name}\" is hidden in {}: the gateway refuses it as an unknown tool",
            manifest.file.display()
        ))
    } else if inputs.manifest_entry.is_none() {
        Some(
            "server annotations are not known offline; a live annotation may lower or raise this"
                .to_string(),
        )
    } else {
        None
    };
    OfflineRisk { risk, source: source.describe(), note }
}
