//! Streamable-HTTP sessions (`/mcp`, 2025-11-25 `Mcp-Session-Id`) bound to the caller
//! that opened them, and capped per caller and overall.
//!
//! Owns: the table `Mcp-Session-Id → owner`, the per-owner session counts, the middleware
//! in front of rmcp's `StreamableHttpService` that checks every request carrying a session
//! id (POST, the answer to a server request, GET stream, DELETE) against the owner, and
//! [`BoundManager`], rmcp's `LocalSessionManager` with a hook that frees the slot whenever
//! rmcp closes a session (DELETE, idle expiry, the session's end).
//! Uses: `identity::Caller` (attached by `auth::require_caller`, which runs first), the
//! audit log for `session_refused`.
//! Must not: parse request bodies (the call path stays as fast as rmcp alone) or decide
//! anything about calls.
//!
//! A session id is not a credential, as on legacy SSE (`sse.rs`): another principal's
//! request on it is refused with 403 and a record. The owner is learnt from the
//! `Mcp-Session-Id` of the initialize response, the only place a session id is handed
//! out, so every session rmcp knows is bound before anyone can name it.
//!
//! Anonymous callers (no identity configured) are all principal `anonymous`; their
//! sessions are bound to the client's IP address instead, so one local client cannot
//! drive another's session from elsewhere. Behind a reverse proxy every anonymous client
//! has the proxy's address: configure identities there.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, LocalSessionManagerError};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use serde_json::json;

use crate::audit::{AuditLog, Record, RecordKind};
use crate::identity::{AuthMethod, Caller, Principal};

/// The header rmcp hands a session id out in, and reads it back from.
const SESSION_HEADER: &str = "mcp-session-id";

/// How many sessions may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Per owner (principal, or client address for anonymous callers).
    pub per_principal: usize,
    /// Over all owners.
    pub total: usize,
}

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Principal(Principal),
    /// No identity configured: the client's address.
    Anonymous(IpAddr),
}

impl Owner {
    fn of(caller: &Caller, peer: Option<SocketAddr>) -> Option<Owner> {
        match caller.via {
            // No address, no binding: refused rather than shared.
            AuthMethod::Anonymous => peer.map(|addr| Owner::Anonymous(addr.ip())),
            AuthMethod::Stdio | AuthMethod::StaticToken | AuthMethod::Oidc | AuthMethod::OidcSignIn | AuthMethod::Slack | AuthMethod::UnixPeer => {
                Some(Owner::Principal(caller.principal.clone()))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Owner::Principal(p) => p.as_str().to_owned(),
            Owner::Anonymous(ip) => format!("anonymous@{ip}"),
        }
    }
}

#[derive(Default)]
struct Table {
    owners: HashMap<SessionId, Owner>,
    counts: HashMap<Owner, usize>,
}

/// Why a new session was not bound.
enum Full {
    Owner(usize),
    Total(usize),
}

/// The shared table; [`BoundManager`] frees entries, the middleware adds and reads them.
#[derive(Default)]
pub(crate) struct Bindings {
    table: Mutex<Table>,
}

impl Bindings {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn owner_of(&self, id: &str) -> Option<Owner> {
        self.lock().owners.get(id).cloned()
    }

    fn bind(&self, id: SessionId, owner: Owner, limits: SessionLimits) -> Result<(), Full> {
        let mut table = self.lock();
        if table.owners.len() >= limits.total {
            return Err(Full::Total(limits.total));
        }
        let count = table.counts.entry(owner.clone()).or_default();
        if *count >= limits.per_principal {
            return Err(Full::Owner(limits.per_principal));
        }
        *count += 1;
        table.owners.insert(id, owner);
        crate::telemetry::http_session_opened();
        Ok(())
    }

    fn release(&self, id: &str) {
        let mut table = self.lock();
        let Some(owner) = table.owners.remove(id) else { return };
        crate::telemetry::http_session_closed();
        if let Some(count) = table.counts.get_mut(&owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.counts.remove(&owner);
            }
        }
    }
}

/// rmcp's in-memory session manager, freeing the binding whenever a session closes.
pub(crate) struct BoundManager {
    inner: LocalSessionManager,
    bindings: Arc<Bindings>,
}

impl BoundManager {
    pub(crate) fn new(bindings: Arc<Bindings>) -> Self {
        Self { inner: LocalSessionManager::default(), bindings }
    }
}

impl SessionManager for BoundManager {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    /// Every way a session ends comes here (DELETE, idle expiry, the service stopping):
    /// first rmcp forgets it, then its slot is freed.
    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let closed = self.inner.close_session(id).await;
        self.bindings.release(id);
        closed
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(&self, id: &SessionId, message: ClientJsonRpcMessage) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    // No session store is configured, so nothing is ever restored: an unknown id is 404.
    async fn restore_session(&self, _id: SessionId) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(RestoreOutcome::NotSupported)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

/// What the middleware needs.
pub(crate) struct Binder {
    pub(crate) bindings: Arc<Bindings>,
    pub(crate) manager: Arc<BoundManager>,
    pub(crate) limits: SessionLimits,
    pub(crate) audit: AuditLog,
}

/// The middleware on `/mcp`: a request naming a session passes only for its owner; a
/// response that opens a session binds it to the caller, or closes it again past a cap.
pub(crate) async fn bind(State(binder): State<Arc<Binder>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    // `require_caller` runs first; a request without a caller never reaches a session.
    let Some(owner) = request.extensions().get::<Caller>().and_then(|caller| Owner::of(caller, peer)) else {
        return (StatusCode::FORBIDDEN, "no caller to bind a session to").into_response();
    };
    // Read the way rmcp reads it (first value, text only), so both see the same id.
    let named = request.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(id) = named {
        if let Some(holder) = binder.bindings.owner_of(&id)
            && holder != owner
        {
            return refuse(&binder, &id, &owner, &holder, request.method().as_str()).await;
        }
        // Unknown ids go on to rmcp, which knows no more of them than this table: 404.
        let closing = request.method() == axum::http::Method::DELETE;
        let response = next.run(request).await;
        return if closing { closed(response) } else { response };
    }
    let response = next.run(request).await;
    let Some(id) = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(SessionId::from) else {
        return response;
    };
    match binder.bindings.bind(id.clone(), owner.clone(), binder.limits) {
        Ok(()) => {
            // rmcp may have closed it already (its worker failed at once): free the slot.
            if !binder.manager.has_session(&id).await.unwrap_or(false) {
                binder.bindings.release(&id);
            }
            response
        }
        Err(full) => {
            // The session exists in rmcp but nobody has its id yet: close it unseen.
            if let Err(error) = binder.manager.close_session(&id).await {
                tracing::warn!(%error, "closing a session opened past the cap");
            }
            tracing::warn!(owner = %owner.describe(), "streamable-HTTP session refused: too many open");
            full.response(&owner)
        }
    }
}

/// A session closed by `DELETE` answers 204 No Content. rmcp says 202 Accepted, which the
/// spec leaves open but clients read as a failure: the Python `mcp` SDK accepts only 200
/// or 204 and warns `Session termination failed: 202` otherwise. Other statuses (404 for
/// an unknown id, 405) pass unchanged.
fn closed(mut response: Response) -> Response {
    if response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.body_mut() = axum::body::Body::empty();
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.headers_mut().remove(header::CONTENT_TYPE);
    }
    response
}

impl Full {
    /// 429 (this owner's cap) or 503 (the gateway's), with a JSON-RPC error body.
    fn response(&self, owner: &Owner) -> Response {
        let (status, message) = match self {
            Full::Owner(cap) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} already has {cap} open sessions, the limit ([http] max_sessions_per_principal); \
                     close one with DELETE /mcp and its Mcp-Session-Id header, or wait for an idle one to expire",
                    owner.describe()
                ),
            ),
            Full::Total(cap) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the gateway already has {cap} open sessions, the limit ([http] max_sessions); \
                     close sessions with DELETE /mcp and their Mcp-Session-Id header, or try again later"
                ),
            ),
        };
        let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": message}});
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        response
    }
}

/// 403 for someone else's session, after its `session_refused` record is durable. The
/// record names the session, who tried and who owns it; never a credential.
async fn refuse(binder: &Binder, id: &str, tried: &Owner, holder: &Owner, method: &str) -> Response {
    tracing::warn!(session = %id, tried = %tried.describe(), owner = %holder.describe(), "request on another caller's session refused");
    let record = Record::new(RecordKind::SessionRefused)
        .principal(tried.describe())
        .reason("the session belongs to another caller")
        .detail(json!({"mcp_session": id, "owner": holder.describe(), "method": method}));
    if let Err(error) = binder.audit.append(record).await {
        tracing::error!(%error, "could not record session_refused");
    }
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {
        "code": -32600,
        "message": "this session belongs to another caller; open your own with initialize",
    }});
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Owner {
        Owner::Principal(Principal::new("alice").unwrap())
    }

    #[test]
    fn caps_count_per_owner_and_free_on_release() {
        let bindings = Bindings::default();
        let limits = SessionLimits { per_principal: 2, total: 3 };
        let bob = Owner::Anonymous("127.0.0.2".parse().unwrap());
        assert!(bindings.bind("a1".into(), alice(), limits).is_ok());
        assert!(bindings.bind("a2".into(), alice(), limits).is_ok());
        assert!(matches!(bindings.bind("a3".into(), alice(), limits), Err(Full::Owner(2))));
        assert!(bindings.bind("b1".into(), bob.clone(), limits).is_ok());
        assert!(matches!(bindings.bind("b2".into(), bob, limits), Err(Full::Total(3))));
        bindings.release("a1");
        bindings.release("a1");
        assert!(bindings.bind("a3".into(), alice(), limits).is_ok());
        assert_eq!(bindings.owner_of("a3"), Some(alice()));
        assert_eq!(bindings.owner_of("a1"), None);
    }
}
