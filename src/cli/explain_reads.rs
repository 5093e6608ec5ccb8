//! The risk of a resource read or a prompt for `airlock explain --resource / --prompt`.
//!
//! Owns: finding which manifest speaks for a URI or an exposed prompt name.
//! Uses: `Downstreams::resource_owner` (live: the servers are started and asked for their
//! lists only), the manifests' `[resources]` / `[prompts]` entries.
//! Must not: read a resource or render a prompt.

use crate::config::Config;
use crate::downstream::{Downstreams, ResourceOwner};
use crate::manifest::Manifest;
use crate::risk::Risk;

use super::explain::OfflineRisk;

const ENTRY: &str = "from the manifest's [resources] / [prompts] entry";
const DEFAULT: &str = "no manifest entry: reads and prompts default to low";

/// A URI's risk: live, from its owner's manifest (and whether the gateway would find an
/// owner at all); offline, from every manifest that has a matching entry (highest wins).
pub(super) fn resource_risk(uri: &str, checked: &super::check::Checked, offline: bool) -> anyhow::Result<OfflineRisk> {
    if offline {
        let found = checked.manifests.iter().filter_map(|m| m.resource_override(uri).risk).max();
        return Ok(OfflineRisk {
            risk: found.unwrap_or(Risk::Low),
            source: if found.is_some() { ENTRY } else { DEFAULT },
            note: Some("offline: which server owns the URI is not known; the highest matching entry of any manifest".to_owned()),
        });
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let namespacing = super::wiring::namespacing(&checked.config.gateway);
    let owner = runtime.block_on(async {
        let downstreams = Downstreams::start(checked.manifests.clone(), namespacing).await;
        let owner = match downstreams.resource_owner(uri).await {
            ResourceOwner::Found(server, _) => Ok(server.manifest().clone()),
            ResourceOwner::Unknown => Err("no running downstream lists this URI: the gateway would answer \"unknown resource\"".to_owned()),
            ResourceOwner::Ambiguous(servers) => Err(format!("several servers list this URI ({}): the gateway refuses the read", servers.join(", "))),
        };
        downstreams.shutdown();
        owner
    });
    Ok(match owner {
        Ok(manifest) => {
            let found = manifest.resource_override(uri).risk;
            OfflineRisk {
                risk: found.unwrap_or(Risk::Low),
                source: if found.is_some() { ENTRY } else { DEFAULT },
                note: Some(format!("served by \"{}\"", manifest.name)),
            }
        }
        Err(note) => OfflineRisk { risk: Risk::Low, source: DEFAULT, note: Some(note) },
    })
}

/// An exposed prompt name's risk, from its server's `[prompts.<name>]` entry.
pub(super) fn prompt_risk(exposed: &str, manifests: &[Manifest], config: &Config) -> OfflineRisk {
    let g = &config.gateway;
    let hit = if g.prefix_tools {
        exposed.split_once(g.separator.as_str()).and_then(|(server, name)| {
            manifests.iter().find(|m| m.name.as_str() == server).map(|m| (m, name))
        })
    } else {
        manifests.iter().find(|m| m.prompts.contains_key(exposed)).map(|m| (m, exposed))
    };
    let Some((manifest, name)) = hit else {
        return OfflineRisk { risk: Risk::Low, source: DEFAULT, note: None };
    };
    let entry = manifest.prompt_override(name);
    let note = entry.hidden.then(|| format!("\"{name}\" is hidden in {}: the gateway answers \"unknown prompt\"", manifest.file.display()));
    OfflineRisk { risk: entry.risk.unwrap_or(Risk::Low), source: if entry.risk.is_some() { ENTRY } else { DEFAULT }, note }
}
