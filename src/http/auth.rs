//! Who is calling: the bearer-token / OIDC check in front of every MCP route, throttled
//! per client address (`Authenticator::authenticate_from`): past the limit of refused
//! credentials an address gets 429 with `Retry-After`.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::approval::api::retry_after;
use crate::identity::{AuthError, www_authenticate};

/// Authenticates the request and attaches its `Caller`; refuses it otherwise. With no
/// identity configured every caller is `anonymous` (the Host/Origin guard still applies).
pub(crate) async fn require_caller(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let info = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    let client = info.map(|c| c.0.ip());
    // Logged on failure: the path only (a query may carry anything), and bounded.
    let route: String = request.uri().path().chars().take(100).collect();
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.gateway.authenticator().authenticate_from(client, &route, authorization).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => refuse(&state.public_url, &error),
    }
}

/// The one mapping of authentication failures to HTTP: 401 with a `WWW-Authenticate`
/// that points at the protected-resource metadata (RFC 9728), or 503 when the issuer's
/// keys cannot be fetched (the token cannot be checked, so it does not count).
fn refuse(public_url: &str, error: &AuthError) -> Response {
    crate::telemetry::rejected(crate::telemetry::Rejected::Auth);
    let status = match error {
        AuthError::MissingCredentials | AuthError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
        AuthError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        AuthError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
    };
    let challenge = www_authenticate(public_url, error);
    let body = axum::Json(serde_json::json!({"error": error.to_string()}));
    let mut response = (status, body).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        retry_after(&mut response, error);
    } else if let Ok(value) = challenge.parse() {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
