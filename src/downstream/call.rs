//! One forwarded `tools/call`: its progress, elicitation requests and final result, in
//! the order the downstream produced them.

// Sampling and logging are deprecated by SEP-2577; Airlock still relays them for the
// clients and servers that use them.
#![allow(deprecated)]

use std::sync::Arc;

use rmcp::RoleClient;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, ClientRequest,
    ProgressNotificationParam, RequestMetaObject, ServerResult,
};
use rmcp::model::RequestId;
use rmcp::service::{Peer, PeerRequestOptions, ServiceError};
use tokio::sync::{mpsc, oneshot};

pub use super::handler::UpstreamAsk;
use super::handler::{CallOwner, CallRelay};
use super::tap::ProgressRoute;
use super::{Health, Server};

/// Why a call could not be forwarded or did not come back.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The server is down (failed to start, crashed, restarting).
    #[error("downstream server '{server}' is unavailable ({reason}); Airlock is restarting it, try again shortly")]
    Unavailable {
        /// The server's name.
        server: String,
        /// Why it is down.
        reason: String,
    },
    /// The connection broke while the call was in flight.
    #[error("downstream server '{server}' went away during the call: {detail}")]
    Lost {
        /// The server's name.
        server: String,
        /// What rmcp reported.
        detail: String,
    },
    /// The downstream answered with a JSON-RPC error.
    #[error("{0}")]
    Downstream(rmcp::model::ErrorData),
    /// A session's own connection to a `scope = "session"` server offers the tool with a
    /// different definition than the catalog the call was decided on.
    #[error("downstream server '{server}' started for this session offers {tool} with a different definition than the catalog lists; the call was not forwarded")]
    Differs {
        /// The server's name.
        server: String,
        /// The exposed tool name.
        tool: String,
    },
    /// The downstream answered a request with something that is not its result.
    #[error("downstream server '{server}' sent an unexpected response to {request}")]
    Unexpected {
        /// The server's name.
        server: String,
        /// The request's method (`tools/call`, `tasks/get`, …).
        request: &'static str,
    },
}

/// What happened next in a forwarded call.
pub enum CallStep {
    /// The downstream reported progress (already in wire order).
    Progress(ProgressNotificationParam),
    /// The downstream asks the client something, or logs.
    Ask(UpstreamAsk),
    /// The call finished. Every earlier progress notification has been returned before.
    Done(Result<CallToolResponse, ForwardError>),
}

/// A call in flight on one downstream.
pub struct PendingCall {
    server: Arc<Server>,
    peer: Peer<RoleClient>,
    id: RequestId,
    response: oneshot::Receiver<Result<ServerResult, ServiceError>>,
    finished: Option<Result<CallToolResponse, ForwardError>>,
    progress: mpsc::UnboundedReceiver<ProgressNotificationParam>,
    asks: mpsc::UnboundedReceiver<UpstreamAsk>,
    _progress_route: ProgressRoute,
    _call_relay: CallRelay,
}

impl Server {
    /// Sends `tools/call` for the downstream tool `name`. `meta` is the client's request
    /// `_meta` minus what belongs to the client-Airlock hop. What the downstream sends up
    /// during the call may reach only `owner`'s session.
    pub async fn start_call(
        self: &Arc<Self>,
        params: CallToolRequestParams,
        owner: CallOwner,
    ) -> Result<PendingCall, ForwardError> {
        let Some(peer) = self.peer() else {
            let reason = match self.health() {
                Health::Down { reason } => reason,
                Health::Starting => "still starting".to_owned(),
                Health::Ready => "not connected".to_owned(),
            };
            return Err(ForwardError::Unavailable { server: self.name().to_owned(), reason });
        };
        let (call_relay, asks) = self.calls.register(owner);
        let mut params = params;
        let options = match params.meta.take() {
            Some(meta) => PeerRequestOptions::no_options().with_meta(hop_meta(meta)),
            None => PeerRequestOptions::no_options(),
        };
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let handle = peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| ForwardError::Lost { server: self.name().to_owned(), detail: e.to_string() })?;
        call_relay.assign(handle.id.clone());
        let (progress_route, progress) = self.progress.register(handle.progress_token.clone());
        Ok(PendingCall {
            server: self.clone(),
            peer,
            id: handle.id,
            response: handle.rx,
            finished: None,
            progress,
            asks,
            _progress_route: progress_route,
            _call_relay: call_relay,
        })
    }
}

/// Keeps the client's own `_meta` entries but drops the per-hop ones: the progress token
/// (rmcp assigns its own downstream) and the 2026-07-28 request metadata, which describe
/// the client, not Airlock. (The gateway drops a client's `airlock/*` keys before this.)
fn hop_meta(mut meta: RequestMetaObject) -> RequestMetaObject {
    meta.0.0.retain(|key, _| {
        key != "progressToken" && !key.starts_with("io.modelcontextprotocol/")
    });
    meta
}

impl PendingCall {
    pub(super) fn server_name(&self) -> &str {
        self.server.name()
    }

    pub(super) fn peer(&self) -> &Peer<RoleClient> {
        &self.peer
    }

    /// Waits for the next event of the call.
    pub async fn next(&mut self) -> CallStep {
        if let Some(result) = self.finished.take() {
            // The response is in; flush progress that arrived before it first.
            if let Ok(progress) = self.progress.try_recv() {
                self.finished = Some(result);
                return CallStep::Progress(progress);
            }
            if let Ok(ask) = self.asks.try_recv() {
                self.finished = Some(result);
                return CallStep::Ask(ask);
            }
            return CallStep::Done(result);
        }
        tokio::select! {
            biased;
            Some(progress) = self.progress.recv() => CallStep::Progress(progress),
            Some(ask) = self.asks.recv() => CallStep::Ask(ask),
            response = &mut self.response => {
                self.finished = Some(self.interpret(response));
                Box::pin(self.next()).await
            }
        }
    }

    fn interpret(
        &self,
        response: Result<Result<ServerResult, ServiceError>, oneshot::error::RecvError>,
    ) -> Result<CallToolResponse, ForwardError> {
        let server = self.server.name().to_owned();
        match response {
            Ok(Ok(ServerResult::CallToolResult(result))) => Ok(CallToolResponse::Complete(result)),
            Ok(Ok(ServerResult::InputRequiredResult(result))) => Ok(CallToolResponse::InputRequired(result)),
            Ok(Ok(ServerResult::CreateTaskResult(result))) => Ok(CallToolResponse::Task(result)),
            Ok(Ok(_)) => Err(ForwardError::Unexpected { server, request: "tools/call" }),
            Ok(Err(ServiceError::McpError(error))) => Err(ForwardError::Downstream(error)),
            Ok(Err(error)) => Err(ForwardError::Lost { server, detail: error.to_string() }),
            Err(_) => Err(ForwardError::Lost { server, detail: "connection closed".to_owned() }),
        }
    }

    /// Tells the downstream the client gave up (`notifications/cancelled`).
    pub async fn cancel(self, reason: Option<String>) {
        let notification = rmcp::model::CancelledNotification::new(
            rmcp::model::CancelledNotificationParam::new(Some(self.id), reason),
        );
        if let Err(error) = self.peer.send_notification(notification.into()).await {
            tracing::debug!(%error, "could not pass cancellation downstream");
        }
    }
}
