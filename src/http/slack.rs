//! `POST /slack/interactions`: hands the raw body and Slack's two headers to the Slack
//! channel, which verifies the signature before parsing anything.
//!
//! Slack posts server-to-server with no `Origin` header, so the Host/Origin guard lets it
//! through as long as its `Host` is allowed (add the public host to `[http] allowed_hosts`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::approval::slack::{Refused, Slack};

/// Answers at once: 200 with an empty body acknowledges a click or closes the modal;
/// the decision itself runs on a task the channel spawned.
pub(crate) async fn interactions(State(slack): State<Arc<Slack>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match slack.receive(header("x-slack-request-timestamp"), header("x-slack-signature"), &body) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(refused) => {
            tracing::warn!(reason = %refused, "refused a request to /slack/interactions");
            (status(&refused), refused.to_string()).into_response()
        }
    }
}

/// The one mapping of a refusal to a status.
fn status(refused: &Refused) -> StatusCode {
    match refused {
        Refused::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Refused::Malformed => StatusCode::BAD_REQUEST,
    }
}
