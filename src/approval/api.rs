//! The `api` channel: `/api/v1/approvals` for approvers and scripts (DESIGN.md §5).
//!
//! Owns: the three routes, their JSON bodies, who may call them (every route needs an
//! authenticated identity), and the one mapping of `DecideError` to HTTP statuses.
//! Uses: the `Broker` (every decision goes through `Broker::decide`, channel `"api"`),
//! `identity::Authenticator`.
//! Must not: reach into `gateway` or `http` (the HTTP layer mounts this router and hands
//! it the authenticator through [`Identify`]), or change an approval except by deciding.
//!
//! Fail closed: when no identity is configured every HTTP caller is `anonymous`, and an
//! anonymous caller gets 401 on every route here. Anyone could otherwise read pending
//! arguments or approve as nobody in particular.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::identity::{AuthError, AuthMethod, Authenticator, Caller};

use super::{Approval, ApprovalId, BrokerError, DecideError, State as ApprovalState, Verdict};
use super::Broker;
use super::store::StoreError;

/// The channel name recorded with every decision made here.
pub const CHANNEL: &str = "api";

/// Where the API finds the authenticator. The HTTP layer implements it for the gateway,
/// so this module needs neither.
pub trait Identify: Send + Sync + 'static {
    /// The authenticator that checks `Authorization` headers.
    fn authenticator(&self) -> &Authenticator;
}

impl Identify for Authenticator {
    fn authenticator(&self) -> &Authenticator {
        self
    }
}

/// The client's address, from the connection (`ConnectInfo`), for throttling refused
/// credentials per address. `None` when the server was not started with connect info.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(ClientAddr(info.map(|c| c.0.ip())))
    }
}

/// `Retry-After` for an answer to [`AuthError::TooManyFailures`].
pub fn retry_after(response: &mut Response, error: &AuthError) {
    if let AuthError::TooManyFailures { retry_after_secs } = error
        && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
}

/// What the handlers reach.
#[derive(Clone)]
struct ApiState {
    broker: Broker,
    identify: Arc<dyn Identify>,
}

/// The `/api/v1/approvals` routes, with their state applied (merge into any router).
pub fn router(broker: Broker, identify: Arc<dyn Identify>) -> Router {
    Router::new()
        .route("/api/v1/approvals", get(list))
        .route("/api/v1/approvals/{id}", get(show))
        .route("/api/v1/approvals/{id}/decision", post(decide))
        .with_state(ApiState { broker, identify })
}

/// Query of `GET /api/v1/approvals`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
}

/// Body of `POST /api/v1/approvals/{id}/decision`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: Verdict,
    #[serde(default)]
    comment: Option<String>,
}

/// Why a request was refused, with its status. Every variant maps in [`ApiError::status`].
/// The control socket's `approvals` requests answer with the same errors.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Auth(AuthError),
    #[error(
        "no identity is configured ([[identity.tokens]] or [[identity.oidc]] in airlock.toml), \
         so the approvals API refuses every request: an anonymous caller can neither read nor decide approvals"
    )]
    Anonymous,
    #[error("unknown state {0:?}: expected pending, approved, denied, expired or cancelled")]
    BadState(String),
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("no approval {0}")]
    NotFound(String),
    #[error("the body must be JSON {{\"decision\": \"approve\" | \"deny\", \"comment\": \"…\"}}: {0}")]
    BadBody(String),
    #[error("approval {id} is not decided over the API (its rule asks for: {channels})")]
    WrongChannel { id: ApprovalId, channels: String },
    #[error("{0}")]
    Decide(DecideError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Auth(AuthError::MissingCredentials | AuthError::InvalidToken(_)) | ApiError::Anonymous => {
                StatusCode::UNAUTHORIZED
            }
            // The token cannot be checked right now, so it does not count; try later.
            ApiError::Auth(AuthError::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Auth(AuthError::TooManyFailures { .. }) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadState(_) | ApiError::BadQuery(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::WrongChannel { .. } => StatusCode::FORBIDDEN,
            ApiError::Decide(error) => match error {
                DecideError::NotFound(_) | DecideError::Broker(BrokerError::NotFound(_)) => StatusCode::NOT_FOUND,
                DecideError::NotEligible(_) => StatusCode::FORBIDDEN,
                DecideError::Expired(_) | DecideError::Settled(_) => StatusCode::CONFLICT,
                // The store (the database of a cluster) is away: nothing was decided; try later.
                DecideError::Broker(BrokerError::Store(StoreError::Unavailable(_))) => StatusCode::SERVICE_UNAVAILABLE,
                DecideError::Broker(
                    BrokerError::Audit(_)
                    | BrokerError::Store(StoreError::Conflict(_))
                    | BrokerError::NotUsable { .. }
                    | BrokerError::ToolChanged(_),
                ) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// True for a decision the rules refused (your own call, not an approver, another
    /// channel, settled or expired), as opposed to a request that could not be served.
    pub fn is_refused_decision(&self) -> bool {
        matches!(self.status(), StatusCode::FORBIDDEN | StatusCode::CONFLICT)
    }

    /// The approval a conflict is about, so the client sees its current state.
    pub fn approval(&self) -> Option<&Approval> {
        match self {
            ApiError::Decide(DecideError::Expired(a) | DecideError::Settled(a)) => Some(a),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "approvals API");
        }
        let mut body = json!({"error": self.to_string()});
        if let Some(approval) = self.approval() {
            body["approval"] = serde_json::to_value(approval).unwrap_or(Value::Null);
        }
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::Auth(error) = &self {
            retry_after(&mut response, error);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        no_store(response)
    }
}

/// Approvals carry arguments: no cache should keep them.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn ok(value: Value) -> Response {
    no_store((StatusCode::OK, axum::Json(value)).into_response())
}

/// The caller, who must be someone: anonymous (no identity configured) is refused.
async fn caller(state: &ApiState, client: ClientAddr, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    identify(state.identify.authenticator(), client.0, "/api/v1/approvals", authorization).await
}

/// Who an `Authorization` header value (`Bearer <token or JWT>`) names, for the API and the
/// control socket alike; anonymous (no identity configured) is refused.
pub async fn identify(
    authenticator: &Authenticator,
    client: Option<std::net::IpAddr>,
    route: &str,
    authorization: Option<&str>,
) -> Result<Caller, ApiError> {
    let caller = authenticator.authenticate_from(client, route, authorization).await.map_err(ApiError::Auth)?;
    match caller.via {
        AuthMethod::Anonymous => Err(ApiError::Anonymous),
        // `Slack` never comes from a bearer token; it is listed so the match stays exhaustive.
        AuthMethod::Stdio | AuthMethod::StaticToken | AuthMethod::Oidc | AuthMethod::OidcSignIn | AuthMethod::Slack | AuthMethod::UnixPeer => {
            Ok(caller)
        }
    }
}

fn lookup(broker: &Broker, id: &str) -> Result<Approval, ApiError> {
    // A malformed id cannot name an approval: it reads as unknown, like any other.
    ApprovalId::parse(id).and_then(|id| broker.get(&id)).ok_or_else(|| ApiError::NotFound(id.to_owned()))
}

/// The approvals `who` may see, oldest first, in state `state` if given (`GET
/// /api/v1/approvals` and the control socket's `approvals_list`).
pub fn visible(broker: &Broker, who: &Caller, state: Option<&str>) -> Result<Vec<Approval>, ApiError> {
    let filter = match state {
        None | Some("") => None,
        Some(text) => Some(ApprovalState::parse(text).ok_or_else(|| ApiError::BadState(text.to_owned()))?),
    };
    Ok(broker.list(filter).into_iter().filter(|a| a.may_view(who)).collect())
}

/// Approval `id` if `who` may see it; one you may not see reads as one that does not exist.
pub fn visible_one(broker: &Broker, who: &Caller, id: &str) -> Result<Approval, ApiError> {
    let approval = lookup(broker, id)?;
    if !approval.may_view(who) {
        return Err(ApiError::NotFound(id.to_owned()));
    }
    Ok(approval)
}

/// `who`'s decision on approval `id`, on channel [`CHANNEL`] (the API's and the control
/// socket's: both present a bearer token). As in `show`, one you may not see reads as one
/// that does not exist, so a refusal never tells an outsider that it exists.
pub async fn decide_as(
    broker: &Broker,
    who: &Caller,
    id: &str,
    verdict: Verdict,
    comment: Option<String>,
) -> Result<super::Decided, ApiError> {
    let approval = visible_one(broker, who, id)?;
    if !approval.announces_on(CHANNEL) {
        return Err(ApiError::WrongChannel { id: approval.id, channels: approval.channels.join(", ") });
    }
    broker.decide(&approval.id, who, verdict, comment, CHANNEL).await.map_err(ApiError::Decide)
}

/// `GET /api/v1/approvals[?state=S]`: oldest first.
async fn list(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = caller(&state, client, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let visible = visible(&state.broker, &who, query.state.as_deref())?;
    Ok(ok(json!({"approvals": visible})))
}

/// `GET /api/v1/approvals/{id}`.
async fn show(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = caller(&state, client, &headers).await?;
    let approval = visible_one(&state.broker, &who, &id)?;
    Ok(ok(serde_json::to_value(approval).unwrap_or(Value::Null)))
}

/// `POST /api/v1/approvals/{id}/decision`. The body is read only after the caller is
/// known, so an unauthenticated client learns nothing from its errors.
async fn decide(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = caller(&state, client, &headers).await?;
    // Looked up before the body is read: one you may not see is not found whatever it says.
    visible_one(&state.broker, &who, &id)?;
    let body: DecisionBody = serde_json::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let decided = decide_as(&state.broker, &who, &id, body.decision, body.comment).await?;
    Ok(ok(json!({"approval": decided.approval, "counted": decided.counted})))
}

#[cfg(test)]
mod tests;
