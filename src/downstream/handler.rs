//! Airlock's client-side handler for one downstream connection: tool-list changes, and
//! the requests (elicitation, sampling) a downstream sends up, each routed to the one call
//! it belongs to or refused.

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
use rmcp::model::RequestId;
use rmcp::service::{InboundStreamOrigin, NotificationContext, RequestContext};
use rmcp::{ClientHandler, RoleClient};
use tokio::sync::{Notify, mpsc, oneshot};

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

/// The client session a forwarded call belongs to: what a downstream's request or log
/// line may be delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallOwner(Arc<str>);

impl CallOwner {
    /// The owner named by a gateway session id.
    pub fn new(session: &str) -> Self {
        Self(Arc::from(session))
    }

    /// The session id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where something a downstream sent up during a call may go.
pub(crate) enum Route {
    /// To this call (of the one session it can belong to).
    Call(mpsc::UnboundedSender<UpstreamAsk>),
    /// No call is in flight that it could belong to.
    NoCall,
    /// Calls of several sessions are in flight and nothing says which one caused it.
    Ambiguous(Vec<CallOwner>),
}

struct InFlight {
    id: u64,
    owner: CallOwner,
    /// The downstream request id of the call, once rmcp has assigned it.
    request: Option<RequestId>,
    tx: mpsc::UnboundedSender<UpstreamAsk>,
}

/// The in-flight calls of one downstream, for what the downstream sends up during a call
/// (elicitation, sampling, log lines).
///
/// A request that arrives on the response stream of one of our POSTs (streamable HTTP)
/// belongs to that call. Anything else (stdio, legacy SSE, the standalone GET stream, log
/// lines, which carry no association) goes to a call only while every call in flight on
/// the server belongs to one session; otherwise it is refused rather than guessed.
#[derive(Default)]
pub(crate) struct CallRelays {
    next: AtomicU64,
    calls: Mutex<Vec<InFlight>>,
    /// Wakes routing that waits for a call's request id (assigned or call dropped).
    changed: Notify,
    /// Log lines dropped because no single session owned them.
    dropped_logs: AtomicU64,
}

impl CallRelays {
    pub(crate) fn register(self: &Arc<Self>, owner: CallOwner) -> (CallRelay, mpsc::UnboundedReceiver<UpstreamAsk>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push(InFlight { id, owner, request: None, tx });
        (CallRelay { relays: self.clone(), id }, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<InFlight>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rule for anything without an association: the most recent call, only while
    /// every call in flight belongs to the same session.
    pub(crate) fn sole_session(&self) -> Route {
        let calls = self.lock();
        let Some(last) = calls.last() else { return Route::NoCall };
        if calls.iter().all(|call| call.owner == last.owner) {
            return Route::Call(last.tx.clone());
        }
        let mut owners: Vec<CallOwner> = Vec::new();
        for call in calls.iter() {
            if !owners.contains(&call.owner) {
                owners.push(call.owner.clone());
            }
        }
        Route::Ambiguous(owners)
    }

    /// The call whose downstream request id is `request`. A call still being sent has no
    /// id yet: wait until it has one or is gone (no timer: both happen promptly).
    pub(crate) async fn by_request(&self, request: &RequestId) -> Route {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let calls = self.lock();
                if let Some(call) = calls.iter().find(|call| call.request.as_ref() == Some(request)) {
                    return Route::Call(call.tx.clone());
                }
                if calls.iter().all(|call| call.request.is_some()) {
                    return Route::NoCall;
                }
            }
            changed.await;
        }
    }

    /// Counts a log line nobody unambiguously owned; returns the count so far.
    pub(crate) fn dropped_log(&self) -> u64 {
        self.dropped_logs.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Unregisters a call from routing on drop.
pub(crate) struct CallRelay {
    relays: Arc<CallRelays>,
    id: u64,
}

impl CallRelay {
    /// Records the downstream request id rmcp gave the call.
    pub(crate) fn assign(&self, request: RequestId) {
        if let Some(call) = self.relays.lock().iter_mut().find(|call| call.id == self.id) {
            call.request = Some(request);
        }
        self.relays.changed.notify_waiters();
    }
}

impl Drop for CallRelay {
    fn drop(&mut self) {
        self.relays.lock().retain(|call| call.id != self.id);
        self.relays.changed.notify_waiters();
    }
}

/// A downstream request Airlock refused to pass to any client, for the audit log.
#[derive(Debug, Clone)]
pub struct UpstreamRefusal {
    /// The downstream server.
    pub server: String,
    /// `elicitation/create` or `sampling/createMessage`.
    pub method: &'static str,
    /// The sessions with calls in flight on that server when it arrived.
    pub sessions: Vec<CallOwner>,
}

/// The `ClientHandler` of one downstream connection.
pub(crate) struct DownstreamHandler {
    pub(crate) server: Arc<Server>,
    pub(crate) downstreams: Weak<Downstreams>,
}

const ELICIT: &str = "elicitation/create";
const SAMPLE: &str = "sampling/createMessage";

impl DownstreamHandler {
    /// The call a server request belongs to: by the response stream it arrived on when
    /// the transport says, else by the one-session rule. Anything else is refused (a
    /// JSON-RPC error to the downstream) and reported for the audit log.
    async fn route(
        &self,
        method: &'static str,
        context: &RequestContext<RoleClient>,
    ) -> Result<mpsc::UnboundedSender<UpstreamAsk>, ErrorData> {
        let route = match context.extensions.get::<InboundStreamOrigin>() {
            Some(InboundStreamOrigin::OutboundRequest(request)) => self.server.calls.by_request(request).await,
            Some(InboundStreamOrigin::Unassociated) | None => self.server.calls.sole_session(),
        };
        match route {
            Route::Call(relay) => Ok(relay),
            Route::NoCall => {
                tracing::warn!(server = self.server.name(), method, "server request with no call of ours in flight; refused");
                Err(ErrorData::invalid_request(format!("{method} refused: no call in flight that it belongs to"), None))
            }
            Route::Ambiguous(sessions) => {
                tracing::warn!(
                    server = self.server.name(),
                    method,
                    sessions = sessions.len(),
                    "server request while calls of several sessions are in flight; refused"
                );
                if let Some(downstreams) = self.downstreams.upgrade() {
                    downstreams.report_refusal(UpstreamRefusal { server: self.server.name().to_owned(), method, sessions });
                }
                Err(ErrorData::invalid_request(
                    format!(
                        "{method} refused by Airlock: calls of several client sessions are in flight on this \
                         server and the request names none of them"
                    ),
                    None,
                ))
            }
        }
    }
}

impl ClientHandler for DownstreamHandler {
    fn get_info(&self) -> ClientConfig {
        // No `roots`: server-filesystem ignores its command-line directories when a client
        // declares it. Elicitation is declared so downstreams may ask; Airlock relays. Tasks
        // too: a downstream may answer a call with one, which Airlock follows for its caller.
        let capabilities = ClientCapabilities::builder().enable_elicitation().enable_sampling().enable_tasks().build();
        // The legacy `initialize` lifecycle speaks 2025-11-25; rmcp's default is 2026-07-28.
        ClientConfig::new(capabilities, Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let relay = self.route(ELICIT, &context).await?;
        let (reply, answer) = oneshot::channel();
        if relay.send(UpstreamAsk::Elicit { params, reply }).is_err() {
            return Ok(ElicitResult::new(ElicitationAction::Cancel));
        }
        answer.await.unwrap_or(Ok(ElicitResult::new(ElicitationAction::Cancel)))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let relay = self.route(SAMPLE, &context).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, RequestId};

    use super::{CallOwner, CallRelays, Route, UpstreamAsk};

    fn log() -> UpstreamAsk {
        UpstreamAsk::Log(LoggingMessageNotificationParam::new(LoggingLevel::Info, serde_json::json!("x")))
    }

    #[test]
    fn without_a_link_only_a_sole_session_gets_it() {
        let relays = Arc::new(CallRelays::default());
        assert!(matches!(relays.sole_session(), Route::NoCall));
        let (_a1, mut rx_a1) = relays.register(CallOwner::new("a"));
        let (_a2, mut rx_a2) = relays.register(CallOwner::new("a"));
        let Route::Call(tx) = relays.sole_session() else { panic!("one session in flight") };
        assert!(tx.send(log()).is_ok());
        assert!(rx_a2.try_recv().is_ok(), "the most recent call of that session");
        assert!(rx_a1.try_recv().is_err());
        let (b, _rx_b) = relays.register(CallOwner::new("b"));
        let Route::Ambiguous(owners) = relays.sole_session() else { panic!("two sessions in flight") };
        assert_eq!(owners, vec![CallOwner::new("a"), CallOwner::new("b")]);
        drop(b);
        assert!(matches!(relays.sole_session(), Route::Call(_)));
    }

    #[tokio::test]
    async fn a_linked_request_waits_for_its_call_to_be_numbered() {
        let relays = Arc::new(CallRelays::default());
        let (a, mut rx_a) = relays.register(CallOwner::new("a"));
        let (b, _rx_b) = relays.register(CallOwner::new("b"));
        b.assign(RequestId::Number(2));
        let waiting = tokio::spawn({
            let relays = relays.clone();
            async move { relays.by_request(&RequestId::Number(1)).await }
        });
        tokio::task::yield_now().await;
        a.assign(RequestId::Number(1));
        let Route::Call(tx) = waiting.await.expect("join") else { panic!("routed to a") };
        assert!(tx.send(log()).is_ok());
        assert!(rx_a.try_recv().is_ok());
        assert!(matches!(relays.by_request(&RequestId::Number(9)).await, Route::NoCall));
    }
}
