//! The stdio transport for `airlock serve`: newline-delimited JSON-RPC on stdin/stdout.
//!
//! Unlike rmcp's own stdio transport, a line that is not JSON gets a JSON-RPC parse
//! error (-32700) and one that is JSON but not a JSON-RPC message gets -32600, so a client
//! that sent garbage learns why; either way the session keeps serving.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// Longest accepted line; a longer one is answered with an error and skipped.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// JSON-RPC over a reader and a writer, one message per line.
pub struct LineTransport<R, W> {
    reader: BufReader<R>,
    writer: Arc<Mutex<W>>,
}

impl LineTransport<tokio::io::Stdin, tokio::io::Stdout> {
    /// The process's stdin and stdout.
    pub fn stdio() -> Self {
        Self::new(tokio::io::stdin(), tokio::io::stdout())
    }
}

impl<R, W> LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a reader and writer.
    pub fn new(reader: R, writer: W) -> Self {
        Self { reader: BufReader::new(reader), writer: Arc::new(Mutex::new(writer)) }
    }

}

/// A JSON-RPC error response, for input too broken to reach rmcp (stdio here, legacy SSE
/// in `http`).
pub fn jsonrpc_error_value(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

async fn reply_error<W: AsyncWrite + Unpin>(writer: &Mutex<W>, id: Value, code: i64, message: String) {
    let reply = jsonrpc_error_value(id, code, &message);
    if let Err(error) = write_line(writer, reply.to_string().into_bytes()).await {
        tracing::warn!(%error, "could not write a JSON-RPC error to stdout");
    }
}

async fn write_line<W: AsyncWrite + Unpin>(writer: &Mutex<W>, mut line: Vec<u8>) -> std::io::Result<()> {
    line.push(b'\n');
    let mut writer = writer.lock().await;
    writer.write_all(&line).await?;
    writer.flush().await
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = self.writer.clone();
        async move {
            let line = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            write_line(&writer, line).await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut self.reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await;
            match read {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "stdin read failed");
                    return None;
                }
            }
            if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
                reply_error(&self.writer, Value::Null, -32600, format!("message longer than {MAX_LINE} bytes")).await;
                // Skip the rest of the oversized line.
                let mut rest = Vec::new();
                if self.reader.read_until(b'\n', &mut rest).await.is_err() {
                    return None;
                }
                continue;
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_slice(text) {
                Ok(value) => value,
                Err(error) => {
                    reply_error(&self.writer, Value::Null, -32700, format!("Parse error: {error}")).await;
                    continue;
                }
            };
            let id = request_id(&value);
            match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value) {
                Ok(message) => return Some(message),
                Err(error) => {
                    reply_error(&self.writer, id, -32600, format!("Invalid Request: {error}")).await;
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.writer.lock().await.flush().await
    }
}

/// The id to answer an invalid message with: its own when it has a usable one.
fn request_id(value: &Value) -> Value {
    match value.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    }
}
