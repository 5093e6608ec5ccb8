//! The legacy HTTP+SSE transport (protocol 2024-11-05): `GET /sse` opens an event stream
//! whose first event names the endpoint; the client POSTs its messages to
//! `/message?sessionId=…` and reads every answer from the stream.
//!
//! rmcp dropped its server for this transport, so it is written here on axum.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, ServiceExt, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::Value;
use tokio::sync::mpsc;

use super::AppState;
use crate::gateway::Channel;
use crate::gateway::stdio::jsonrpc_error_value;
use crate::identity::{Caller, Principal};

/// Messages buffered per direction before the sender waits.
const QUEUE: usize = 256;

/// Open legacy SSE sessions: session id → the inbound half of its transport.
#[derive(Clone, Default)]
pub(crate) struct SseSessions {
    inbound: Arc<Mutex<HashMap<String, (Principal, Inbound)>>>,
}

type Inbound = mpsc::Sender<RxJsonRpcMessage<RoleServer>>;

impl SseSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Inbound)>> {
        self.inbound.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One session's transport: what the client POSTs comes in, what the server sends goes
/// out on the event stream.
struct ChannelTransport {
    inbound: mpsc::Receiver<RxJsonRpcMessage<RoleServer>>,
    outbound: mpsc::Sender<TxJsonRpcMessage<RoleServer>>,
}

impl Transport<RoleServer> for ChannelTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let outbound = self.outbound.clone();
        async move {
            outbound
                .send(item)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "SSE client disconnected"))
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        self.inbound.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inbound.close();
        Ok(())
    }
}

/// Removes the session when its event stream ends.
struct SessionGuard {
    sessions: SseSessions,
    id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
        tracing::debug!(session = %self.id, "legacy SSE session closed");
    }
}

/// `GET /sse`.
pub(crate) async fn connect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (inbound_tx, inbound) = mpsc::channel(QUEUE);
    let (outbound, outbound_rx) = mpsc::channel(QUEUE);
    state.sse.lock().insert(id.clone(), (caller.principal.clone(), inbound_tx));
    let session = state.gateway.session(Channel::LegacySse, Some(caller));
    tokio::spawn(async move {
        match session.serve(ChannelTransport { inbound, outbound }).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(error) => tracing::debug!(%error, "legacy SSE session did not initialize"),
        }
    });
    let guard = SessionGuard { sessions: state.sse.clone(), id: id.clone() };
    let endpoint = format!("/message?sessionId={id}");
    let stream = event_stream(endpoint, guard, outbound_rx);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The event stream: the endpoint first, then every outbound message. The guard lives in
/// the stream's state, so the session ends when the client goes away (the stream drops).
fn event_stream(
    endpoint: String,
    guard: SessionGuard,
    outbound: mpsc::Receiver<TxJsonRpcMessage<RoleServer>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let first = futures::stream::once(async move { Ok(Event::default().event("endpoint").data(endpoint)) });
    let rest = futures::stream::unfold((outbound, guard), |(mut outbound, guard)| async move {
        let message = outbound.recv().await?;
        let data = serde_json::to_string(&message)
            .unwrap_or_else(|error| jsonrpc_error_value(Value::Null, -32603, &error.to_string()).to_string());
        Some((Ok(Event::default().event("message").data(data)), (outbound, guard)))
    });
    futures::StreamExt::chain(first, rest)
}

/// The query of `POST /message`.
#[derive(serde::Deserialize)]
pub(crate) struct MessageQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

/// `POST /message?sessionId=…`.
pub(crate) async fn message(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<MessageQuery>,
    body: Bytes,
) -> Response {
    let message: RxJsonRpcMessage<RoleServer> = match serde_json::from_slice::<serde_json::Value>(&body) {
        Err(error) => return jsonrpc_error(StatusCode::BAD_REQUEST, -32700, &format!("Parse error: {error}")),
        Ok(value) => match serde_json::from_value(value) {
            Ok(message) => message,
            Err(error) => return jsonrpc_error(StatusCode::BAD_REQUEST, -32600, &format!("Invalid Request: {error}")),
        },
    };
    let Some((owner, inbound)) = state.sse.lock().get(&query.session_id).cloned() else {
        return (StatusCode::NOT_FOUND, "unknown or closed session").into_response();
    };
    // A session id is not a credential: only the caller who opened the stream may post.
    if owner != caller.principal {
        return (StatusCode::FORBIDDEN, "this session belongs to another caller").into_response();
    }
    match inbound.send(message).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(_) => (StatusCode::GONE, "session closed").into_response(),
    }
}

fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    (status, axum::Json(jsonrpc_error_value(Value::Null, code, message))).into_response()
}
