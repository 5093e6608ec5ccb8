//! Connections of `scope = "session"` servers that belong to one client session.
//!
//! The shared, supervised connection of such a server (its template) supplies the tool
//! catalog and is never called; each client session gets its own connection (for a stdio
//! server, its own child process), started at the session's first call to that server and
//! stopped when the session ends (its `SessionChildren` drops). A session child that exits
//! is started again at the session's next call.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use super::call::ForwardError;
use super::{Downstreams, Health, Server, connect};
use crate::manifest::Scope;

/// The session-scoped connections of one client session.
pub struct SessionChildren {
    downstreams: Weak<Downstreams>,
    /// Keyed by server name; an async lock so two first calls start one child.
    children: tokio::sync::Mutex<HashMap<String, Arc<Server>>>,
    /// Cancelled when the session ends: every child of the session stops.
    ended: CancellationToken,
}

impl SessionChildren {
    /// `shutdown` is the gateway's: its end stops the session's children too.
    pub(super) fn new(downstreams: Weak<Downstreams>, shutdown: &CancellationToken) -> Self {
        Self { downstreams, children: tokio::sync::Mutex::default(), ended: shutdown.child_token() }
    }

    /// The server a call to `template`'s tools goes to for this session: `template`
    /// itself when it is shared, else this session's own connection, started if needed.
    pub async fn server_for(&self, template: &Arc<Server>) -> Result<Arc<Server>, ForwardError> {
        if template.manifest().scope == Scope::Shared {
            return Ok(template.clone());
        }
        let mut children = self.children.lock().await;
        if let Some(child) = children.get(template.name())
            && child.peer().is_some()
        {
            return Ok(child.clone());
        }
        let stop = self.ended.child_token();
        let child = Arc::new(Server::new(template.manifest().clone(), stop.clone()));
        connect::start_session_child(&child, &self.downstreams, stop.clone()).await.map_err(|reason| {
            child.set_health(Health::Down { reason: reason.clone() });
            ForwardError::Unavailable { server: template.name().to_owned(), reason }
        })?;
        // Its `tools/list_changed` refreshes its own list, coalesced like a shared server's.
        tokio::spawn(super::refresh::run(child.clone(), Weak::new(), stop));
        children.insert(template.name().to_owned(), child.clone());
        Ok(child)
    }
}

impl Drop for SessionChildren {
    fn drop(&mut self) {
        // Each child's task drops its connection, which kills a stdio child.
        self.ended.cancel();
    }
}
