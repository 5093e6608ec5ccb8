//! The HTTP surface, on one axum router.
//!
//! Owns: routes (`/mcp` streamable HTTP, legacy `/sse` + `/message`, `/healthz`,
//! `/slack/interactions`; the approvals API is `approval::api` and the approver pages are
//! `approval::web`, both mounted here), the
//! Host/Origin guard in front of all of them, the `Mcp-Method`/`Mcp-Name` check of MCP
//! POSTs (`mcp_headers.rs`), and the listener (with `TCP_NODELAY`).
//! Uses: `gateway` for MCP sessions; the Slack channel for its interactions.
//! Must not: implement pipeline decisions; it only hands requests to the gateway.

mod auth;
pub(crate) mod guard;
mod listen;
mod mcp_headers;
mod sessions;
mod slack;
mod sse;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::config::HttpLimits;
use crate::gateway::{Channel, Gateway};

pub use guard::{HostGuard, HostPattern};
pub use listen::serve;
pub use sessions::SessionLimits;

/// Extra detail for `/healthz` (e.g. witness publishing), by name; called per request.
pub type HealthProbe = (&'static str, Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    gateway: Arc<Gateway>,
    probes: Vec<HealthProbe>,
    sse: sse::SseSessions,
    /// Base URL for links and the `WWW-Authenticate` challenge.
    public_url: String,
}

/// Builds the router. The Host/Origin guard covers every route, so rmcp's own check on
/// `/mcp` is switched off: one decision point. Bodies are capped per route: MCP messages
/// (`/mcp`, `/message`) at `max_body_mcp`, everything else at `max_body` (413 past it).
pub fn router(
    gateway: Arc<Gateway>,
    guard: HostGuard,
    public_url: String,
    web: crate::approval::web::Web,
    limits: &HttpLimits,
    shutdown: CancellationToken,
    probes: Vec<HealthProbe>,
) -> Router {
    let mcp_gateway = gateway.clone();
    let gateway_for_api = gateway.clone();
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(limits.max_body_mcp)
        .with_cancellation_token(shutdown);
    let bindings = Arc::new(sessions::Bindings::default());
    let manager = Arc::new(sessions::BoundManager::new(bindings.clone()));
    let mcp = StreamableHttpService::new(
        move || Ok(mcp_gateway.session(Channel::StreamableHttp, None)),
        manager.clone(),
        config,
    );
    let binder = Arc::new(sessions::Binder {
        bindings,
        manager,
        limits: SessionLimits { per_principal: limits.max_sessions_per_principal, total: limits.max_sessions },
        audit: gateway.audit().clone(),
    });
    let mcp = Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(binder, sessions::bind));
    let state = AppState { gateway, probes, sse: sse::SseSessions::default(), public_url };
    let authenticated = Router::new()
        .route("/sse", get(sse::connect))
        .route("/message", post(sse::message).layer(DefaultBodyLimit::max(limits.max_body_mcp)))
        .merge(mcp)
        // Inside `require_caller`: an unauthenticated body is never read.
        .route_layer(axum::middleware::from_fn_with_state(limits.max_body_mcp, mcp_headers::check))
        .layer(axum::middleware::from_fn(count_malformed))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_caller));
    Router::new()
        .route("/healthz", get(healthz))
        .route(crate::identity::RESOURCE_METADATA_PATH, get(resource_metadata))
        .merge(authenticated)
        // The approver page signs people in itself (session cookie or bearer header).
        .merge(web.router())
        .with_state(state)
        // Not behind `require_caller`: that lets anonymous through, the API refuses it.
        .merge(crate::approval::api::router(gateway_for_api.approvals().clone(), gateway_for_api))
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(axum::middleware::from_fn_with_state(Arc::new(guard), guard::check))
}

/// Counts an authenticated MCP request refused as unreadable (rmcp's and `/message`'s 400
/// for a body that is not JSON-RPC or a bad MCP header, 413 past the size limit, 415 for
/// another content type) in `airlock_rejected_requests_total{reason="malformed"}`.
async fn count_malformed(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let response = next.run(request).await;
    let status = response.status();
    if matches!(status, http::StatusCode::BAD_REQUEST | http::StatusCode::PAYLOAD_TOO_LARGE | http::StatusCode::UNSUPPORTED_MEDIA_TYPE) {
        crate::telemetry::rejected(crate::telemetry::Rejected::Malformed);
    }
    response
}

/// `/slack/interactions`, behind the same Host/Origin guard; `serve` merges it into
/// [`router`] when `[approvals.slack]` is configured.
pub fn slack_routes(slack: Arc<crate::approval::slack::Slack>, guard: HostGuard, limits: &HttpLimits) -> Router {
    Router::new()
        .route("/slack/interactions", post(slack::interactions))
        .with_state(slack)
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(axum::middleware::from_fn_with_state(Arc::new(guard), guard::check))
}

/// `/audit`, behind the same Host/Origin guard and body limit; `serve` merges it into
/// [`router`] beside the approver page, whose sign-in it shares.
pub fn audit_routes(view: crate::audit_view::AuditView, guard: HostGuard, limits: &HttpLimits) -> Router {
    view.router()
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(axum::middleware::from_fn_with_state(Arc::new(guard), guard::check))
}

/// The approvals API authenticates through the gateway's authenticator.
impl crate::approval::api::Identify for Gateway {
    fn authenticator(&self) -> &crate::identity::Authenticator {
        Gateway::authenticator(self)
    }
}

/// `GET /healthz`: 200 with every downstream's health and the probes' detail.
async fn healthz(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let servers: serde_json::Map<String, serde_json::Value> = state
        .gateway
        .downstreams()
        .servers()
        .iter()
        .map(|s| (s.name().to_owned(), serde_json::Value::String(format!("{:?}", s.health()))))
        .collect();
    let mut body = serde_json::json!({"status": "ok", "downstreams": servers});
    for (name, probe) in &state.probes {
        body[*name] = probe();
    }
    axum::Json(body)
}

/// `GET /.well-known/oauth-protected-resource` (RFC 9728).
async fn resource_metadata(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(state.gateway.authenticator().protected_resource_metadata(&state.public_url))
}
