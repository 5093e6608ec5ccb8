//! Tool fingerprints: trust on first sight, and a changed tool is `critical` until an
//! operator accepts it (DESIGN.md §3).
//!
//! Owns: the fingerprint of a tool (version 2: SHA-256 of the canonical JSON of the whole
//! tool as a client is shown it, under its exposed name, plus the server it comes from),
//! the store of accepted and last-seen fingerprints in the gateway's state database
//! (`<data_dir>/state`, tree `fingerprints`), and the upgrade of version-1 entries.
//! Uses: `audit::canonical` and `Sha256Digest`.
//! Must not: write the audit log or decide a call (`gateway::vetting` and the pipeline do).
//!
//! Stored strings carry their version: `v2:<hex>`. A bare `<hex>` is a version-1
//! fingerprint (name, description, input schema and annotations only), written by
//! earlier releases; when the tool's version-1 fingerprint still matches it, the entry
//! is upgraded to version 2 in place instead of being flagged as changed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rmcp::model::Tool;
use serde_json::json;

use crate::audit::{Sha256Digest, canonical};

pub mod postgres;
pub mod store;

pub use store::{Entry, FingerprintStore, SledFingerprints};
/// The prefix of a version-2 fingerprint in its text form.
const V2: &str = "v2:";

/// Why the fingerprint store failed.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// The store failed: sled (or its database is locked by a running gateway), or the
    /// cluster's database is unreachable.
    #[error("tool fingerprint store: {0}")]
    Store(String),
    /// No tool of that name was ever seen.
    #[error("no tool named {0} has been seen by this gateway")]
    Unknown(String),
}

/// A version-2 tool fingerprint. Written `v2:<64 hex digits>`; approvals and receipts
/// carry its digest (the hex part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(Sha256Digest);

impl Fingerprint {
    /// The fingerprint of `tool` as the downstream `server` serves it, under its exposed
    /// name: every field a client is shown or a model reads (name, title, description,
    /// input and output schema, annotations, icons, `_meta`), and the server, so a name
    /// taken over by another server (with `prefix_tools = false`) is a change.
    pub fn of(server: &str, exposed_name: &str, tool: &Tool) -> Fingerprint {
        let mut shown = tool.clone();
        shown.name = exposed_name.to_owned().into();
        // A Tool is plain data; serialising it cannot fail.
        let tool = serde_json::to_value(&shown).unwrap_or_default();
        let value = json!({"fingerprint": 2, "server": server, "tool": tool});
        Fingerprint(Sha256Digest::of(&canonical(&value)))
    }

    /// The digest, as approvals and receipts carry it.
    pub fn digest(self) -> Sha256Digest {
        self.0
    }

    fn parse(text: &str) -> Option<Fingerprint> {
        text.strip_prefix(V2)?.parse().ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{V2}{}", self.0)
    }
}

/// The version-1 fingerprint earlier releases stored (bare hex), kept only to upgrade
/// their entries.
fn legacy_v1(exposed_name: &str, tool: &Tool) -> String {
    let value = json!({
        "name": exposed_name,
        "description": tool.description,
        "inputSchema": tool.input_schema.as_ref(),
        "annotations": tool.annotations,
    });
    Sha256Digest::of(&canonical(&value)).to_string()
}

/// Where a tool stands against what was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Matches the accepted fingerprint.
    Trusted,
    /// Seen for the first time just now, and trusted on first sight.
    New,
    /// Differs from the accepted fingerprint: treated as critical.
    Changed,
    /// Added while the gateway ran, with `new_tools = "hold"`, and not accepted yet:
    /// treated as critical.
    Unaccepted,
}

impl Status {
    /// Lowercase name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Trusted => "trusted",
            Status::New => "new",
            Status::Changed => "changed",
            Status::Unaccepted => "unaccepted",
        }
    }

    /// True when the tool must be treated as critical until an operator accepts it.
    pub fn is_untrusted(self) -> bool {
        matches!(self, Status::Changed | Status::Unaccepted)
    }
}

/// How a tool first seen comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSight {
    /// Trusted on first sight (a server's first tool list, or `new_tools = "trust"`).
    Trust,
    /// Critical until accepted (added at run time with `new_tools = "hold"`).
    Hold,
}

/// What checking one tool found, and what to store once it is logged.
pub struct Observation {
    /// The tool's current fingerprint.
    pub fingerprint: Fingerprint,
    /// Its status against the accepted one.
    pub status: Status,
    /// The accepted fingerprint, when it differs (a version-1 one is shown `v1:<hex>`).
    pub accepted: Option<String>,
    /// True the first time this particular changed fingerprint is seen (log it once).
    pub newly_changed: bool,
    /// The stored version-1 fingerprint this upgrades, when it did.
    pub upgraded_from: Option<String>,
    /// What to store (`None`: the stored entry is already right).
    write: Option<Stored>,
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Fingerprints {
    store: Arc<dyn FingerprintStore>,
}

impl Fingerprints {
    /// Opens (or creates) the state database under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, FingerprintError> {
        Self::in_db(&open_state(data_dir).map_err(|e| FingerprintError::Store(e.to_string()))?)
    }

    /// The store inside an open state database (shared with the approval broker).
    pub fn in_db(db: &sled::Db) -> Result<Self, FingerprintError> {
        Ok(Self::in_store(Arc::new(SledFingerprints::open(db)?)))
    }

    /// The fingerprints in `store` (sled, or a cluster's database).
    pub fn in_store(store: Arc<dyn FingerprintStore>) -> Self {
        Self { store }
    }

    /// Compares a tool with what was accepted, without storing anything: the caller
    /// stores (`record`) once whatever it logs about the tool is durable.
    pub fn check(
        &self,
        server: &str,
        exposed_name: &str,
        tool: &Tool,
        first: FirstSight,
    ) -> Result<Observation, FingerprintError> {
        let fingerprint = Fingerprint::of(server, exposed_name, tool);
        let now = fingerprint.to_string();
        let Some(mut stored) = self.stored(exposed_name)? else {
            let (status, accepted) = match first {
                FirstSight::Trust => (Status::New, Some(now.clone())),
                FirstSight::Hold => (Status::Unaccepted, None),
            };
            let newly_changed = status == Status::Unaccepted;
            let write = Some(Stored { key: exposed_name.to_owned(), accepted, seen: now });
            return Ok(Observation { fingerprint, status, accepted: None, newly_changed, upgraded_from: None, write });
        };
        let before = stored.clone();
        let mut upgraded_from = None;
        if let Some(old) = stored.accepted.clone().filter(|a| Fingerprint::parse(a).is_none())
            && old == legacy_v1(exposed_name, tool)
        {
            // Accepted under version 1 and unchanged in what version 1 covered.
            stored.accepted = Some(now.clone());
            stored.seen = now.clone();
            upgraded_from = Some(old);
        }
        let newly_changed = stored.seen != now;
        stored.seen = now.clone();
        let status = match &stored.accepted {
            Some(accepted) if *accepted == now => Status::Trusted,
            Some(_) => Status::Changed,
            None => Status::Unaccepted,
        };
        let accepted = match status {
            Status::Changed => stored.accepted.as_deref().map(shown),
            _ => None,
        };
        let write = (stored != before).then_some(stored);
        let newly_changed = newly_changed && status.is_untrusted();
        Ok(Observation { fingerprint, status, accepted, newly_changed, upgraded_from, write })
    }

    /// Stores what `check` found (first sightings, upgrades, the last seen fingerprint).
    pub async fn record(&self, observations: &[Observation]) -> Result<(), FingerprintError> {
        let entries: Vec<(String, Entry)> =
            observations.iter().filter_map(|o| o.write.as_ref()).map(|s| (s.key.clone(), s.entry())).collect();
        self.store.put_all(&entries).await
    }

    /// Accepts the last seen fingerprint of `exposed_name` (`airlock tools accept`).
    pub async fn accept(&self, exposed_name: &str) -> Result<String, FingerprintError> {
        let stored = self.stored(exposed_name)?.ok_or_else(|| FingerprintError::Unknown(exposed_name.to_owned()))?;
        let accepted = Entry { accepted: Some(stored.seen.clone()), seen: stored.seen.clone() };
        self.store.put_all(&[(exposed_name.to_owned(), accepted)]).await?;
        Ok(shown(&stored.seen))
    }

    /// The stored entry (one that does not parse reads as accepted nothing).
    fn stored(&self, exposed_name: &str) -> Result<Option<Stored>, FingerprintError> {
        let Some(entry) = self.store.get(exposed_name)? else { return Ok(None) };
        Ok(Some(Stored { key: exposed_name.to_owned(), accepted: entry.accepted, seen: entry.seen }))
    }
}

/// A stored fingerprint for people: `v2:<hex>` as is, a bare version-1 one as `v1:<hex>`.
fn shown(stored: &str) -> String {
    if stored.starts_with(V2) { stored.to_owned() } else { format!("v1:{stored}") }
}

/// Opens the gateway state database, `<data_dir>/state`.
///
/// Without sled's periodic flush: every write that must survive a crash (a fingerprint,
/// an approval, a channel note, a task, the feed's position) flushes when it is made, and
/// what is not flushed (pruning old entries) is redone after a crash. The periodic flush
/// fsynced every 500 ms for as long as the gateway ran, idle or not.
pub fn open_state(data_dir: &Path) -> Result<sled::Db, sled::Error> {
    sled::Config::new().path(data_dir.join("state")).flush_every_ms(None).open()
}

/// One stored entry and its key (the exposed tool name).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    key: String,
    accepted: Option<String>,
    seen: String,
}

impl Stored {
    fn entry(&self) -> Entry {
        Entry { accepted: self.accepted.clone(), seen: self.seen.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(description: &str) -> Tool {
        let schema = serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let serde_json::Value::Object(schema) = schema else { unreachable!() };
        Tool::new("t", description.to_owned(), std::sync::Arc::new(schema))
    }

    fn store() -> (Fingerprints, sled::Tree) {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let sled = SledFingerprints::open(&db).expect("store");
        let tree = sled.tree.clone();
        (Fingerprints::in_store(Arc::new(sled)), tree)
    }

    #[test]
    fn the_fingerprint_covers_what_clients_are_shown_and_the_server() {
        let base = Fingerprint::of("s", "s__t", &tool("d"));
        assert_eq!(base, Fingerprint::of("s", "s__t", &tool("d")));
        assert!(base.to_string().starts_with("v2:"));
        assert_ne!(base, Fingerprint::of("other", "s__t", &tool("d")), "server");
        let mut titled = tool("d");
        titled.title = Some("T".into());
        assert_ne!(base, Fingerprint::of("s", "s__t", &titled), "title");
        let mut meta = tool("d");
        meta.meta = Some(rmcp::model::MetaObject(serde_json::Map::from_iter([("ui/resourceUri".to_owned(), json!("ui://x"))])));
        assert_ne!(base, Fingerprint::of("s", "s__t", &meta), "_meta");
        let mut output = tool("d");
        output.output_schema = Some(tool("d").input_schema);
        assert_ne!(base, Fingerprint::of("s", "s__t", &output), "outputSchema");
    }

    #[tokio::test]
    async fn first_sight_is_trusted_or_held_and_a_change_is_seen_once() {
        let (store, _) = store();
        let first = store.check("s", "s__t", &tool("d"), FirstSight::Trust).expect("check");
        assert_eq!(first.status, Status::New);
        store.record(&[first]).await.expect("record");
        assert_eq!(store.check("s", "s__t", &tool("d"), FirstSight::Hold).expect("check").status, Status::Trusted);
        let changed = store.check("s", "s__t", &tool("e"), FirstSight::Trust).expect("check");
        assert!(changed.status == Status::Changed && changed.newly_changed);
        store.record(&[changed]).await.expect("record");
        let again = store.check("s", "s__t", &tool("e"), FirstSight::Trust).expect("check");
        assert!(again.status == Status::Changed && !again.newly_changed, "logged once");
        let held = store.check("s", "s__u", &tool("d"), FirstSight::Hold).expect("check");
        assert_eq!(held.status, Status::Unaccepted);
        store.record(&[held]).await.expect("record");
        store.accept("s__u").await.expect("accept");
        assert_eq!(store.check("s", "s__u", &tool("d"), FirstSight::Hold).expect("check").status, Status::Trusted);
    }

    #[tokio::test]
    async fn a_matching_version_1_entry_is_upgraded_and_a_stale_one_is_a_change() {
        let (store, tree) = store();
        let v1 = legacy_v1("s__t", &tool("d"));
        let legacy = serde_json::to_vec(&json!({"accepted": v1, "seen": v1})).expect("json");
        tree.insert("s__t", legacy.clone()).expect("insert");
        tree.insert("s__u", legacy).expect("insert");
        let upgraded = store.check("s", "s__t", &tool("d"), FirstSight::Trust).expect("check");
        assert_eq!(upgraded.status, Status::Trusted);
        assert_eq!(upgraded.upgraded_from.as_deref(), Some(v1.as_str()));
        store.record(&[upgraded]).await.expect("record");
        let after = store.check("s", "s__t", &tool("d"), FirstSight::Trust).expect("check");
        assert!(after.status == Status::Trusted && after.upgraded_from.is_none());
        let stale = store.check("s", "s__u", &tool("d"), FirstSight::Trust).expect("check");
        assert_eq!(stale.status, Status::Changed, "v1 computed under another name does not match");
        assert_eq!(stale.accepted, Some(format!("v1:{v1}")));
    }
}
