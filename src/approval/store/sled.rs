//! The approvals in sled, `<data_dir>/state`: tree `approvals` (id → JSON), `approvals-live`
//! (binding → id) and `approval-channel-notes` (`channel \x1f id` → JSON).
//!
//! Owns: those trees. Uses: the broker's lock to serialize transitions (one process opens
//! a sled database, so nothing else writes). Must not: let `sled::Error` out.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{ApprovalStore, Change, StoreError, Transition, binding_of, is_live};
use crate::approval::{Approval, ApprovalId};

const TREE: &str = "approvals";
/// What channels remember about a hold across restarts (e.g. a Slack message's `ts`).
const NOTES: &str = "approval-channel-notes";
/// Live holds (pending, or approved and unused) by what they are bound to, so a retry
/// finds its hold without reading every approval ever made.
const LIVE: &str = "approvals-live";

/// The sled backend.
#[derive(Clone)]
pub struct SledApprovals {
    tree: sled::Tree,
    live: sled::Tree,
    notes: sled::Tree,
}

impl SledApprovals {
    /// The trees inside an open state database.
    pub fn open(db: &sled::Db) -> Result<SledApprovals, StoreError> {
        Ok(SledApprovals { tree: db.open_tree(TREE)?, live: db.open_tree(LIVE)?, notes: db.open_tree(NOTES)? })
    }

    fn read(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        let Some(bytes) = self.tree.get(id.as_str())? else { return Ok(None) };
        // An entry that does not parse was written by no release of ours: skip it as the
        // listing does, rather than failing every read of it.
        Ok(serde_json::from_slice(&bytes).ok())
    }
}

fn note_key(channel: &str, id: &ApprovalId) -> String {
    format!("{channel}\u{1f}{id}")
}

/// A transition on sled: the broker's lock already serializes it.
struct SledTransition<'a> {
    store: &'a SledApprovals,
}

impl Transition for SledTransition<'_> {
    fn get<'a>(&'a mut self, id: &'a ApprovalId) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        std::future::ready(self.store.read(id)).boxed()
    }

    fn live<'a>(&'a mut self, binding: &'a str) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        let found = (|| {
            let Some(id) = self.store.live.get(binding)? else { return Ok(None) };
            let id = ApprovalId(String::from_utf8_lossy(&id).into_owned());
            self.store.read(&id)
        })();
        std::future::ready(found).boxed()
    }

    fn put<'a>(&'a mut self, approval: &'a Approval) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            // An Approval is plain data; serialising it cannot fail.
            let bytes = serde_json::to_vec(approval).unwrap_or_default();
            let key = binding_of(approval);
            let id = approval.id.as_str();
            let live = is_live(approval);
            // Both trees in one sled transaction: the approval and its index entry agree.
            (&self.store.tree, &self.store.live)
                .transaction(|(tree, index)| {
                    tree.insert(id, bytes.as_slice())?;
                    if live {
                        index.insert(key.as_bytes(), id)?;
                    } else if index.get(key.as_bytes())?.is_some_and(|found| found == id.as_bytes()) {
                        index.remove(key.as_bytes())?;
                    }
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|error| StoreError::Unavailable(format!("{error:?}")))?;
            self.store.tree.flush_async().await?;
            Ok(())
        }
        .boxed()
    }

    fn remove<'a>(&'a mut self, id: &'a ApprovalId) -> BoxFuture<'a, Result<(), StoreError>> {
        std::future::ready(self.store.tree.remove(id.as_str()).map(drop).map_err(StoreError::from)).boxed()
    }

    fn orphans(&mut self) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>> {
        // One gateway: a start cancels what an earlier run left pending.
        std::future::ready(Ok(Vec::new())).boxed()
    }
}

use sled::Transactional;

impl ApprovalStore for SledApprovals {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Transition + '_>, StoreError>> {
        std::future::ready(Ok(Box::new(SledTransition { store: self }) as Box<dyn Transition + '_>)).boxed()
    }

    fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        self.read(id)
    }

    fn all(&self) -> Result<Vec<Approval>, StoreError> {
        let mut all = Vec::new();
        for entry in self.tree.iter().values() {
            if let Ok(approval) = serde_json::from_slice(&entry?) {
                all.push(approval);
            }
        }
        Ok(all)
    }

    fn remember<'a>(&'a self, channel: &'a str, id: &'a ApprovalId, note: &'a Value) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.notes.insert(note_key(channel, id), serde_json::to_vec(note).unwrap_or_default())?;
            // A crash right after posting is the case this is for.
            self.notes.flush_async().await?;
            Ok(())
        }
        .boxed()
    }

    fn forget<'a>(&'a self, channel: &'a str, id: &'a ApprovalId) -> BoxFuture<'a, Result<(), StoreError>> {
        std::future::ready(self.notes.remove(note_key(channel, id)).map(drop).map_err(StoreError::from)).boxed()
    }

    fn notes<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<(ApprovalId, Value)>, StoreError>> {
        let prefix = note_key(channel, &ApprovalId(String::new()));
        let mut found = Vec::new();
        for entry in self.notes.scan_prefix(prefix.as_bytes()) {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(error) => return std::future::ready(Err(error.into())).boxed(),
            };
            let id = std::str::from_utf8(&key[prefix.len()..]).ok().and_then(ApprovalId::parse);
            if let (Some(id), Ok(note)) = (id, serde_json::from_slice(&value)) {
                found.push((id, note));
            }
        }
        std::future::ready(Ok(found)).boxed()
    }

    fn replica(&self) -> Option<&str> {
        None
    }

    fn changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        None
    }
}
