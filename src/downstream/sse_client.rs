//! A client for the legacy HTTP+SSE transport (protocol 2024-11-05), for downstreams that
//! still speak it: `GET` the SSE URL, wait for the `endpoint` event, then POST every
//! message there and read every answer from the event stream.
//!
//! rmcp ships no client for this transport.

use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::{mpsc, oneshot};

/// Messages buffered from the event stream.
const QUEUE: usize = 256;

/// Why the SSE transport failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SseError {
    /// The HTTP request failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error status.
    #[error("{what} answered HTTP {status}")]
    Status {
        /// Which request.
        what: &'static str,
        /// The status code.
        status: reqwest::StatusCode,
    },
    /// The stream ended before naming its endpoint, or named an unusable one.
    #[error("the SSE stream did not announce a usable endpoint: {0}")]
    Endpoint(String),
}

/// The client side of one legacy SSE session.
pub(crate) struct SseClientTransport {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    inbound: mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
    reader: tokio::task::JoinHandle<()>,
}

impl SseClientTransport {
    /// Opens the event stream at `url` and waits for the endpoint event.
    pub(crate) async fn connect(http: reqwest::Client, url: &str) -> Result<Self, SseError> {
        let base = reqwest::Url::parse(url).map_err(|e| SseError::Endpoint(e.to_string()))?;
        let response = http.get(base.clone()).header("accept", "text/event-stream").send().await?;
        if !response.status().is_success() {
            return Err(SseError::Status { what: "GET (event stream)", status: response.status() });
        }
        let (endpoint_tx, endpoint_rx) = oneshot::channel();
        let (inbound_tx, inbound) = mpsc::channel(QUEUE);
        let reader = tokio::spawn(read_events(response, endpoint_tx, inbound_tx));
        let endpoint = endpoint_rx
            .await
            .map_err(|_| SseError::Endpoint("stream closed first".to_owned()))?;
        let endpoint = base.join(&endpoint).map_err(|e| SseError::Endpoint(format!("{endpoint}: {e}")))?;
        // The endpoint must stay on the same origin: a downstream must not redirect our
        // posts elsewhere.
        if endpoint.origin() != base.origin() {
            return Err(SseError::Endpoint(format!("{endpoint} is on another origin")));
        }
        Ok(Self { http, endpoint, inbound, reader })
    }
}

impl Drop for SseClientTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Parses the event stream: the first `endpoint` event, then `message` events.
async fn read_events(
    mut response: reqwest::Response,
    endpoint: oneshot::Sender<String>,
    inbound: mpsc::Sender<RxJsonRpcMessage<RoleClient>>,
) {
    let mut endpoint = Some(endpoint);
    let mut buffer = String::new();
    loop {
        while let Some((kind, data)) = take_event(&mut buffer) {
            match kind.as_str() {
                "endpoint" => {
                    if let Some(tx) = endpoint.take() {
                        let _ = tx.send(data);
                    }
                }
                "message" | "" => match serde_json::from_str(&data) {
                    Ok(message) => {
                        if inbound.send(message).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "ignoring an unparsable SSE message from a downstream"),
                },
                other => tracing::debug!(event = other, "ignoring SSE event"),
            }
        }
        match response.chunk().await {
            Ok(Some(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Takes one complete event (`event:`/`data:` lines ended by a blank line) off `buffer`.
pub(crate) fn take_event(buffer: &mut String) -> Option<(String, String)> {
    loop {
        let normalized = buffer.replace("\r\n", "\n");
        if normalized.len() != buffer.len() {
            *buffer = normalized;
        }
        let end = buffer.find("\n\n")?;
        let block: String = buffer.drain(..end + 2).collect();
        let mut kind = String::new();
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                kind = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if !kind.is_empty() || !data.is_empty() {
            return Some((kind, data.join("\n")));
        }
    }
}

impl Transport<RoleClient> for SseClientTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let http = self.http.clone();
        let endpoint = self.endpoint.clone();
        async move {
            let response = http.post(endpoint).json(&item).send().await?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(SseError::Status { what: "POST (message)", status: response.status() })
            }
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        self.inbound.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::take_event;

    #[test]
    fn events_split_on_blank_lines_with_crlf_and_multiline_data() {
        let mut buffer = "event: endpoint\r\ndata: /message?sessionId=1\r\n\r\n: comment\n\ndata: {\"a\":\ndata: 1}\n\npartial".to_owned();
        assert_eq!(take_event(&mut buffer), Some(("endpoint".into(), "/message?sessionId=1".into())));
        assert_eq!(take_event(&mut buffer), Some((String::new(), "{\"a\":\n1}".into())));
        assert_eq!(take_event(&mut buffer), None);
        assert_eq!(buffer, "partial");
    }
}
