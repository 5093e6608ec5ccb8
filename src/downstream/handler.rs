//! Airlock's client-side handler for one downstream connection: tool-list changes and
//! elicitation requests coming up from the downstream.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ErrorData, Implementation,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ClientHandler, RoleClient};
use tokio::sync::{mpsc, oneshot};

use super::{Downstreams, Server};

/// A downstream's elicitation request on its way to the client whose call caused it.
pub struct ElicitReply {
    /// What the downstream asked.
    pub params: ElicitRequestParams,
    /// Where the client's answer goes.
    pub reply: oneshot::Sender<Result<ElicitResult, ErrorData>>,
}

/// The in-flight calls of one downstream that can take an elicitation request.
///
/// Over stdio a server request carries no link to the call that caused it, so a request is
/// given to the most recently started call still in flight on that server: with one call
/// at a time (the usual case for an interactive agent) that is exact.
#[derive(Default)]
pub(crate) struct ElicitRelays {
    next: AtomicU64,
    calls: Mutex<Vec<(u64, mpsc::UnboundedSender<ElicitReply>)>>,
}

impl ElicitRelays {
    pub(crate) fn register(self: &Arc<Self>) -> (ElicitRelay, mpsc::UnboundedReceiver<ElicitReply>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push((id, tx));
        (ElicitRelay { relays: self.clone(), id }, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, mpsc::UnboundedSender<ElicitReply>)>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn latest(&self) -> Option<mpsc::UnboundedSender<ElicitReply>> {
        self.lock().last().map(|(_, tx)| tx.clone())
    }
}

/// Unregisters a call from elicitation routing on drop.
pub(crate) struct ElicitRelay {
    relays: Arc<ElicitRelays>,
    id: u64,
}

impl Drop for ElicitRelay {
    fn drop(&mut self) {
        self.relays.lock().retain(|(id, _)| *id != self.id);
    }
}

/// The `ClientHandler` of one downstream connection.
pub(crate) struct DownstreamHandler {
    pub(crate) server: Arc<Server>,
    pub(crate) downstreams: Weak<Downstreams>,
}

impl ClientHandler for DownstreamHandler {
    fn get_info(&self) -> ClientConfig {
        // No `roots`: server-filesystem ignores its command-line directories when a client
        // declares it. Elicitation is declared so downstreams may ask; Airlock relays.
        let capabilities = ClientCapabilities::builder().enable_elicitation().build();
        ClientConfig::new(capabilities, Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let Some(relay) = self.server.elicit.latest() else {
            tracing::warn!(server = self.server.name(), "elicitation request with no call in flight; declined");
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        let (reply, answer) = oneshot::channel();
        if relay.send(ElicitReply { params, reply }).is_err() {
            return Ok(ElicitResult::new(ElicitationAction::Cancel));
        }
        answer.await.unwrap_or(Ok(ElicitResult::new(ElicitationAction::Cancel)))
    }

    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        match context.peer.list_all_tools().await {
            Ok(tools) => {
                self.server.set_tools(tools);
                if let Some(downstreams) = self.downstreams.upgrade() {
                    downstreams.rebuild_catalog();
                }
                tracing::info!(server = self.server.name(), "tool list changed; catalog refreshed");
            }
            Err(error) => {
                tracing::warn!(server = self.server.name(), %error, "could not refresh tools after list_changed");
            }
        }
    }
}
