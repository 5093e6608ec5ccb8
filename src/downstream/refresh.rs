//! Coalescing `notifications/tools/list_changed`: one refresh of a server's tool list at a
//! time, after a short debounce, whatever the number of notifications.
//!
//! A downstream may send thousands of notifications (a bug, or on purpose); each one used
//! to cost a `tools/list` and a catalog rebuild. Here a notification only marks the server
//! as wanting a refresh. One task per server waits for that mark, lets the rest of a burst
//! arrive (`DEBOUNCE`), clears the mark, then fetches the list once and rebuilds the
//! catalog. A notification that arrives while a fetch runs marks the server again, so the
//! list fetched last is never older than the last notification. The cost of a storm is
//! therefore bounded by one fetch per `DEBOUNCE` per server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Downstreams, Server};

/// How long a burst of notifications is given to finish before the list is fetched.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// One server's pending refresh.
#[derive(Default)]
pub(super) struct Refresh {
    wanted: AtomicBool,
    wake: Notify,
    /// Refreshes done (for logs).
    done: AtomicU64,
}

impl Refresh {
    /// Asks for a refresh (cheap; called per notification).
    pub(super) fn request(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }
}

/// Refreshes `server`'s tool list whenever it is asked to, one fetch at a time, until
/// shutdown.
pub(super) async fn run(server: Arc<Server>, downstreams: Weak<Downstreams>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = server.refresh.wake.notified() => {}
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(DEBOUNCE) => {}
            () = shutdown.cancelled() => return,
        }
        // Cleared before the fetch: a notification from now on asks for another one.
        if !server.refresh.wanted.swap(false, Ordering::AcqRel) {
            continue;
        }
        let Some(peer) = server.peer() else { continue };
        match super::freshness::tools(&peer).await {
            Ok(tools) => {
                server.set_tools(tools);
                // A session's own child has no catalog of its own (`Weak::new()`): its list
                // is only compared with the catalog entry when it is called.
                if let Some(downstreams) = downstreams.upgrade() {
                    downstreams.rebuild_catalog();
                }
                let done = server.refresh.done.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(server = server.name(), refreshes = done, "tool list changed; catalog refreshed");
            }
            Err(error) => {
                tracing::warn!(server = server.name(), %error, "could not refresh tools after list_changed");
            }
        }
    }
}
