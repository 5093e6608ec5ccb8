//! Outbound HTTP for the chat channels: one JSON POST, retried on rate limits and server
//! errors.
//!
//! Owns: the retry schedule (429 honours `Retry-After`; 5xx and connection failures back
//! off exponentially), and `Secret`, a string that never prints.
//! Uses: `reqwest` (rustls with the ring provider, installed by `serve`).
//! Must not: log a token, a webhook URL or a request body; block anything but the
//! channel task that called it.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::Value;

/// Tries per request: the first plus retries. A channel that is down this long has
/// missed the approval anyway; other channels are unaffected.
const ATTEMPTS: u32 = 6;
/// First backoff after a 5xx or connection failure; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest single wait, whatever `Retry-After` asks for.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A credential or credential-bearing URL. `Debug` and `Display` print a placeholder, so
/// a stray `?settings` in a log line leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why a POST gave up.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    #[error("{target} answered HTTP {status}")]
    Status { target: String, status: u16 },
    #[error("{target} could not be reached: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("{target} still failing after {ATTEMPTS} attempts: {last}")]
    GaveUp { target: String, last: String },
}

/// An HTTP client for the channels.
#[derive(Clone, Debug)]
pub struct Outbound {
    http: reqwest::Client,
}

/// What came back from a successful POST.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The JSON body, or `Null` when there was none or it was not JSON (a webhook's 202).
    pub body: Value,
}

impl Outbound {
    /// A client with short timeouts: a hung peer costs one attempt, not the channel.
    pub fn new() -> Result<Outbound, PostError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PostError::Client(e.to_string()))?;
        Ok(Outbound { http })
    }

    /// POSTs `body` as JSON to `url` (with `bearer` if given), retrying 429 after its
    /// `Retry-After` and 5xx / connection failures with exponential backoff. `target`
    /// names the peer in errors and logs (never the URL: a webhook URL is a credential).
    pub async fn post_json(&self, target: &str, url: &str, bearer: Option<&Secret>, body: &Value) -> Result<Answer, PostError> {
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let mut request = self.http.post(url).json(body);
            if let Some(token) = bearer {
                request = request.bearer_auth(token.expose());
            }
            let wait = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.map_err(|e| PostError::Unreachable {
                        target: target.to_owned(),
                        reason: without_url(&e),
                    })?;
                    // A webhook may answer 202 with nothing, or with text; only Slack's JSON
                    // is read, and its caller checks `ok`.
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    return Ok(Answer { status, body });
                }
                Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                    last = "HTTP 429".to_owned();
                    retry_after(&response).unwrap_or(backoff)
                }
                Ok(response) if response.status().is_server_error() => {
                    last = format!("HTTP {}", response.status().as_u16());
                    backoff
                }
                Ok(response) => {
                    return Err(PostError::Status { target: target.to_owned(), status: response.status().as_u16() });
                }
                Err(error) => {
                    last = without_url(&error);
                    backoff
                }
            };
            if attempt < ATTEMPTS {
                tracing::warn!(target, attempt, problem = %last, "retrying in {} ms", wait.as_millis());
                tokio::time::sleep(wait.min(MAX_WAIT)).await;
                backoff = (backoff * 2).min(MAX_WAIT);
            }
        }
        Err(PostError::GaveUp { target: target.to_owned(), last })
    }
}

/// `Retry-After` in seconds (the form Slack and Microsoft send).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let text = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// reqwest errors print the URL, and a webhook URL is a credential.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "could not read the response"
    } else {
        "request failed"
    };
    kind.to_owned()
}
