//! The aggregated tool catalog: every visible downstream tool under its exposed name.

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::Tool;

use super::Server;
use crate::risk::{self, Risk, RiskInputs, RiskSource};

/// How exposed tool names are formed from server and tool names.
#[derive(Debug, Clone)]
pub enum Namespacing {
    /// `<server><separator><tool>`, e.g. `fs__read_file`.
    Prefix {
        /// Placed between server and tool names.
        separator: String,
    },
    /// The downstream tool name as is; a name offered by two servers is served from the
    /// first server (in manifest order) and reported.
    None,
}

impl Namespacing {
    /// The exposed name of `tool` (or prompt) of `server`.
    pub fn expose(&self, server: &str, tool: &str) -> String {
        match self {
            Namespacing::Prefix { separator } => format!("{server}{separator}{tool}"),
            Namespacing::None => tool.to_owned(),
        }
    }
}

/// One exposed tool.
#[derive(Clone)]
pub struct CatalogEntry {
    /// Risk from the manifest and annotations (before fingerprint checks).
    pub risk: Risk,
    /// Where `risk` came from.
    pub risk_source: RiskSource,
    /// The server that serves it.
    pub server: Arc<Server>,
    /// The tool as the downstream describes it (its own name).
    pub tool: Tool,
    /// The tool as clients see it (exposed name).
    pub exposed: Tool,
}

/// Every visible tool, in exposed-name order (deterministic across restarts).
#[derive(Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
    /// Servers whose tool list had arrived when this catalog was built.
    listed: Vec<String>,
}

impl Catalog {
    pub(super) fn build(servers: &[Arc<Server>], namespacing: &Namespacing) -> Self {
        let mut entries = BTreeMap::new();
        let mut listed = Vec::new();
        for server in servers {
            let Some(tools) = server.listing() else { continue };
            listed.push(server.name().to_owned());
            for tool in tools {
                if server.manifest().is_hidden(&tool.name) {
                    continue;
                }
                let name = namespacing.expose(server.name(), &tool.name);
                if let Some(existing) = entries.get(&name) {
                    let existing: &CatalogEntry = existing;
                    tracing::error!(
                        tool = %name,
                        kept = existing.server.name(),
                        dropped = server.name(),
                        "two downstream servers expose the same tool name; enable prefixing"
                    );
                    continue;
                }
                let mut exposed = tool.clone();
                exposed.name = name.clone().into();
                let annotations = tool.annotations.as_ref();
                let (risk, risk_source) = risk::assign(&RiskInputs {
                    manifest_entry: server.manifest().tool_risk(&tool.name),
                    read_only_hint: annotations.and_then(|a| a.read_only_hint),
                    destructive_hint: annotations.and_then(|a| a.destructive_hint),
                    manifest_default: server.manifest().default_risk,
                    fingerprint_changed: false,
                });
                entries.insert(name, CatalogEntry { risk, risk_source, server: server.clone(), tool, exposed });
            }
        }
        Self { entries, listed }
    }

    /// The servers whose tool list had arrived when this catalog was built, in manifest
    /// order (a server that never answered `tools/list` is not among them).
    pub fn listed_servers(&self) -> impl Iterator<Item = &str> {
        self.listed.iter().map(String::as_str)
    }

    /// Looks up an exposed name.
    pub fn get(&self, exposed: &str) -> Option<&CatalogEntry> {
        self.entries.get(exposed)
    }

    /// Every entry, in exposed-name order.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    /// Number of exposed tools.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no tool is exposed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn same_tools(&self, other: &Catalog) -> bool {
        self.listed == other.listed
            && self.entries.len() == other.entries.len()
            && self
                .entries
                .values()
                .zip(other.entries.values())
                .all(|(a, b)| a.exposed == b.exposed && Arc::ptr_eq(&a.server, &b.server))
    }
}
