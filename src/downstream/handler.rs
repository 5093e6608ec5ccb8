//! Airlock's client-side handler for one downstream connection: tool-list changes and
//! elicitation requests coming up from the downstream.

// Sampling and logging are deprecated by SEP-2577; Airlock still relays them for the
// clients and servers that use them.
#![allow(deprecated)]

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequestParams, ElicitResult, ElicitationAction, ErrorData, Implementation,
    LoggingMessageNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ClientHandler, RoleClient};
use tokio::sync::{mpsc, oneshot};

use super::{Downstreams, Server};

/// Something a downstream sends the client while one of its calls is in flight.
pub enum UpstreamAsk {
    /// `elicitation/create`: answer through `reply`.
    Elicit {
        /// What the downstream asked.
        params: ElicitRequestParams,
        /// Where the client's answer goes.
        reply: oneshot::Sender<Result<ElicitResult, ErrorData>>,
    },
    /// `sampling/createMessage`: answer through `reply`.
    Sample {
        /// What the downstream asked.
        params: CreateMessageRequestParams,
        /// Where the client's answer goes.
        reply: oneshot::Sender<Result<CreateMessageResult, ErrorData>>,
    },
    /// `notifications/message` (a log line).
    Log(LoggingMessageNotificationParam),
}

/// The in-flight calls of one downstream, for what the downstream sends up during a call
/// (elicitation, sampling, log lines).
///
/// Over stdio a server request carries no link to the call that caused it, so a request is
/// given to the most recently started call still in flight on that server: with one call
/// at a time (the usual case for an interactive agent) that is exact.
#[derive(Default)]
pub(crate) struct CallRelays {
    next: AtomicU64,
    calls: Mutex<Vec<(u64, mpsc::UnboundedSender<UpstreamAsk>)>>,
}

impl CallRelays {
    pub(crate) fn register(self: &Arc<Self>) -> (CallRelay, mpsc::UnboundedReceiver<UpstreamAsk>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push((id, tx));
        (CallRelay { relays: self.clone(), id }, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, mpsc::UnboundedSender<UpstreamAsk>)>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn latest(&self) -> Option<mpsc::UnboundedSender<UpstreamAsk>> {
        self.lock().last().map(|(_, tx)| tx.clone())
    }
}

/// Unregisters a call from elicitation routing on drop.
pub(crate) struct CallRelay {
    relays: Arc<CallRelays>,
    id: u64,
}

impl Drop for CallRelay {
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
        let capabilities = ClientCapabilities::builder().enable_elicitation().enable_sampling().build();
        // The legacy `initialize` lifecycle speaks 2025-11-25; rmcp's default is 2026-07-28.
        ClientConfig::new(capabilities, Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let Some(relay) = self.server.calls.latest() else {
            tracing::warn!(server = self.server.name(), "elicitation request with no call in flight; declined");
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        let (reply, answer) = oneshot::channel();
        if relay.send(UpstreamAsk::Elicit { params, reply }).is_err() {
            return Ok(ElicitResult::new(ElicitationAction::Cancel));
        }
        answer.await.unwrap_or(Ok(ElicitResult::new(ElicitationAction::Cancel)))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let Some(relay) = self.server.calls.latest() else {
            return Err(ErrorData::invalid_request("sampling request with no call in flight", None));
        };
        let (reply, answer) = oneshot::channel();
        if relay.send(UpstreamAsk::Sample { params, reply }).is_err() {
            return Err(ErrorData::invalid_request("the call that caused this sampling request has ended", None));
        }
        answer.await.unwrap_or_else(|_| Err(ErrorData::invalid_request("the call ended before the client answered", None)))
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(downstreams) = self.downstreams.upgrade() {
            let _ = downstreams.resource_updates.send(params);
        }
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // The next read lists again, so ownership follows the server's current resources.
        self.server.resources.invalidate();
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // Coalesced: a storm of notifications costs one refresh at a time (`refresh.rs`).
        self.server.refresh.request();
    }
}
