//! The catalog clients are served: the downstreams' catalog with every tool's fingerprint
//! checked before a client can list or call it.
//!
//! Owns: `Vetted` (each exposed tool with its fingerprint and status), building it from a
//! downstream `Catalog`, and the records that say what the check found (`tool_changed`,
//! `tool_added`, `fingerprint_upgraded`).
//! Uses: `fingerprints` for the store, `downstream::Catalog` for the tools.
//! Must not: append to the log or store anything itself: `Gateway::refresh_catalog`
//! publishes the vetted catalog first, then logs the records as one group, then stores.
//!
//! **Invariant:** a tool whose fingerprint differs from the accepted one is `critical` in
//! the very catalog that first shows its new definition, so no call is ever decided on
//! a new definition at the old risk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;

use crate::audit::{Record, RecordKind};
use crate::config::NewTools;
use crate::downstream::{Catalog, CatalogEntry};
use crate::risk::{Risk, RiskSource};

use super::fingerprints::{Fingerprint, Fingerprints, FirstSight, Observation, Status};

/// One exposed tool with what its fingerprint check found.
pub struct VettedTool {
    /// The tool as the downstream catalog has it.
    pub entry: CatalogEntry,
    /// Its fingerprint now.
    pub fingerprint: Fingerprint,
    /// Its fingerprint against the accepted one.
    pub status: Status,
}

impl VettedTool {
    /// The exposed name.
    pub fn name(&self) -> &str {
        self.entry.exposed.name.as_ref()
    }

    /// The effective risk: `critical` while the tool is not the accepted one.
    pub fn risk(&self) -> (Risk, RiskSource) {
        match self.status {
            Status::Changed => (Risk::Critical, RiskSource::FingerprintChanged),
            Status::Unaccepted => (Risk::Critical, RiskSource::NewTool),
            Status::Trusted | Status::New => (self.entry.risk, self.entry.risk_source),
        }
    }
}

/// Every exposed tool, vetted, in exposed-name order.
#[derive(Default)]
pub struct Vetted {
    tools: BTreeMap<String, Arc<VettedTool>>,
    /// Servers whose first tool list is in this catalog: a tool they add later is an
    /// addition at run time.
    listed: BTreeSet<String>,
}

impl Vetted {
    /// Looks up an exposed name.
    pub fn get(&self, exposed: &str) -> Option<&Arc<VettedTool>> {
        self.tools.get(exposed)
    }

    /// Every tool, in exposed-name order.
    pub fn tools(&self) -> impl Iterator<Item = &Arc<VettedTool>> {
        self.tools.values()
    }

    /// Number of exposed tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// True when no tool is exposed.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// A vetted catalog, what to log about it, and what to store once that is logged.
pub(super) struct Vetting {
    pub catalog: Vetted,
    pub records: Vec<Record>,
    pub observations: Vec<Observation>,
}

/// The catalog as a gateway starting now would serve it (`airlock tools list` with no
/// gateway running): every tool checked against the store, nothing stored or logged.
pub fn vet_stored(store: &Fingerprints, catalog: &Catalog, new_tools: NewTools) -> Vetted {
    vet(store, &Vetted::default(), catalog, new_tools).catalog
}

/// Checks every tool of `catalog` against the store. `previous` is the catalog clients
/// were served until now (it tells additions at run time from a server's first list).
pub(super) fn vet(store: &Fingerprints, previous: &Vetted, catalog: &Catalog, new_tools: NewTools) -> Vetting {
    let mut vetting = Vetting { catalog: Vetted::default(), records: Vec::new(), observations: Vec::new() };
    for entry in catalog.entries() {
        let server = entry.server.name();
        let name = entry.exposed.name.as_ref();
        let added = previous.listed.contains(server) && previous.get(name).is_none();
        let first = if added && new_tools == NewTools::Hold { FirstSight::Hold } else { FirstSight::Trust };
        let (fingerprint, status) = match store.check(server, name, &entry.tool, first) {
            Ok(observation) => {
                vetting.records.extend(records_for(entry, &observation, added));
                let found = (observation.fingerprint, observation.status);
                vetting.observations.push(observation);
                found
            }
            Err(error) => {
                // Fail closed: a tool whose accepted fingerprint cannot be read is not trusted.
                tracing::error!(tool = name, %error, "could not check the tool fingerprint; treated as changed");
                (Fingerprint::of(server, name, &entry.tool), Status::Changed)
            }
        };
        let tool = VettedTool { entry: entry.clone(), fingerprint, status };
        vetting.catalog.tools.insert(name.to_owned(), Arc::new(tool));
    }
    vetting.catalog.listed = catalog.listed_servers().map(str::to_owned).collect();
    vetting
}

/// What the log says about one checked tool.
fn records_for(entry: &CatalogEntry, observation: &Observation, added: bool) -> Vec<Record> {
    let name = entry.exposed.name.as_ref();
    let server = entry.server.name();
    let mut records = Vec::new();
    if let Some(from) = &observation.upgraded_from {
        tracing::info!(tool = name, "stored fingerprint upgraded from version 1 to 2 (the tool is unchanged)");
        records.push(Record::new(RecordKind::FingerprintUpgraded).tool(name).detail(json!({
            "server": server,
            "from": format!("v1:{from}"),
            "to": observation.fingerprint.to_string(),
        })));
    }
    let risk = match observation.status {
        Status::Changed | Status::Unaccepted => Risk::Critical,
        Status::Trusted | Status::New => entry.risk,
    };
    if added {
        let held = observation.status.is_untrusted();
        if held {
            tracing::warn!(tool = name, server, "tool added at run time; critical until `airlock tools accept`");
        } else {
            tracing::info!(tool = name, server, "tool added at run time");
        }
        records.push(Record::new(RecordKind::ToolAdded).tool(name).risk(risk.as_str()).detail(json!({
            "server": server,
            "fingerprint": observation.fingerprint.to_string(),
            "status": observation.status.as_str(),
        })));
    } else if observation.newly_changed {
        tracing::warn!(tool = name, server, "tool definition changed; treated as critical until `airlock tools accept`");
        records.push(Record::new(RecordKind::ToolChanged).tool(name).risk(risk.as_str()).detail(json!({
            "server": server,
            "fingerprint": observation.fingerprint.to_string(),
            "accepted": observation.accepted,
        })));
    }
    records
}
