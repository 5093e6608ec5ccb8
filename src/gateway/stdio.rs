//! The stdio transport for `airlock serve`: newline-delimited JSON-RPC on stdin/stdout.
//!
//! Unlike rmcp's own stdio transport, a line that is not JSON gets a JSON-RPC parse
//! error (-32700) and one that is JSON but not a JSON-RPC message gets -32600, so a client
//! that sent garbage learns why; either way the session keeps serving.
//!
//! A line longer than the configured maximum (`[gateway] max_message_size`) is answered
//! with -32600 as soon as it passes the limit and then skipped chunk by chunk up to its
//! newline: at most the limit plus one read buffer is ever held, however long the line.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// JSON-RPC over a reader and a writer, one message per line.
pub struct LineTransport<R, W> {
    reader: BufReader<R>,
    writer: Arc<Mutex<W>>,
    /// Longest accepted message in bytes, its newline not counted.
    max_message: usize,
}

impl LineTransport<ClientIn, ClientOut> {
    /// The process's stdin and stdout ([`client_stdio`]), accepting messages up to
    /// `max_message` bytes. Call it on the runtime that serves it.
    pub fn stdio(max_message: usize) -> Self {
        let (input, output) = client_stdio();
        Self::new(input, output, max_message)
    }
}

/// The client's end of stdin, as [`client_stdio`] opened it.
pub type ClientIn = Box<dyn AsyncRead + Unpin + Send>;
/// The client's end of stdout, as [`client_stdio`] opened it.
pub type ClientOut = Box<dyn AsyncWrite + Unpin + Send>;

/// Stdin and stdout for a stdio MCP peer. When they are pipes or sockets (how MCP clients
/// launch servers) they are read and written on the runtime's own reactor; otherwise (a
/// file, a terminal) through `tokio::io::stdin`/`stdout`, whose every read and write is
/// a hop to tokio's blocking pool and back: two thread hand-offs per message each way.
///
/// Making a descriptor non-blocking changes its open file description, which other
/// descriptors may share. Stderr stays blocking (`eprintln!` must never see `EAGAIN`), so
/// a stream on the same file as stderr (`2>&1`) keeps the blocking-pool path.
/// Must be called inside a Tokio runtime (the reactor registers the descriptors).
pub fn client_stdio() -> (ClientIn, ClientOut) {
    use std::os::fd::AsFd as _;
    let stderr = identity(std::io::stderr().as_fd());
    let input = reactor_fd(std::io::stdin().as_fd(), stderr).and_then(stream_of).and_then(|s| s.into_input().ok());
    let output = reactor_fd(std::io::stdout().as_fd(), stderr).and_then(stream_of).and_then(|s| s.into_output().ok());
    (input.unwrap_or_else(|| Box::new(tokio::io::stdin())), output.unwrap_or_else(|| Box::new(tokio::io::stdout())))
}

/// Duplicates of stdin and stdout when both can be served by a reactor (as in
/// [`client_stdio`]): what a bridge can hand to the gateway (`control::handoff`).
pub fn client_stdio_fds() -> Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::AsFd as _;
    let stderr = identity(std::io::stderr().as_fd());
    Some((reactor_fd(std::io::stdin().as_fd(), stderr)?, reactor_fd(std::io::stdout().as_fd(), stderr)?))
}

/// A standard descriptor that can be served by the reactor.
pub(crate) enum Stream {
    Pipe(std::os::fd::OwnedFd),
    Socket(tokio::net::UnixStream),
}

impl Stream {
    /// As the input of a session. Must be called inside a Tokio runtime.
    pub(crate) fn into_input(self) -> std::io::Result<ClientIn> {
        Ok(match self {
            Stream::Pipe(fd) => Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?),
            Stream::Socket(socket) => Box::new(socket),
        })
    }

    /// As the output of a session. Must be called inside a Tokio runtime.
    pub(crate) fn into_output(self) -> std::io::Result<ClientOut> {
        Ok(match self {
            Stream::Pipe(fd) => Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?),
            Stream::Socket(socket) => Box::new(socket),
        })
    }
}

/// The file a descriptor refers to (device, inode), to tell whether two share one.
fn identity(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// A duplicate of `fd` if it is a pipe or a socket and not on stderr's file.
fn reactor_fd(fd: std::os::fd::BorrowedFd<'_>, stderr: Option<(u64, u64)>) -> Option<std::os::fd::OwnedFd> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    if stderr == Some((meta.dev(), meta.ino())) {
        return None;
    }
    (meta.file_type().is_fifo() || meta.file_type().is_socket()).then(|| file.into())
}

/// A pipe or a socket as a [`Stream`]; `None` for anything else (a file, a terminal).
/// Must be called inside a Tokio runtime.
pub(crate) fn stream_of(fd: std::os::fd::OwnedFd) -> Option<Stream> {
    use std::os::unix::fs::FileTypeExt as _;
    let file = std::fs::File::from(fd);
    let kind = file.metadata().ok()?.file_type();
    if kind.is_fifo() {
        return Some(Stream::Pipe(file.into()));
    }
    if kind.is_socket() {
        // Read and write are the same calls on any stream socket; a Unix stream is what
        // clients that use socket pairs for stdio (libuv, so Node) give us.
        let socket = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(file));
        socket.set_nonblocking(true).ok()?;
        return tokio::net::UnixStream::from_std(socket).ok().map(Stream::Socket);
    }
    None
}

impl<R, W> LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a reader and writer.
    pub fn new(reader: R, writer: W, max_message: usize) -> Self {
        Self { reader: BufReader::new(reader), writer: Arc::new(Mutex::new(writer)), max_message }
    }
}

/// What one bounded read of a line found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line (or the last bytes before end of input) is in the buffer.
    Complete,
    /// The line passed the limit; `line` was cleared and the rest must be skipped.
    TooLong,
    /// End of input with nothing read.
    End,
}

/// Reads one line into `line` unless it grows past `max` bytes (newline not counted).
pub(crate) async fn read_bounded<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if line.is_empty() { Line::End } else { Line::Complete });
        }
        let newline = memchr::memchr(b'\n', chunk);
        let content = newline.unwrap_or(chunk.len());
        if line.len() + content > max {
            line.clear();
            return Ok(Line::TooLong);
        }
        let take = newline.map_or(chunk.len(), |at| at + 1);
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if newline.is_some() {
            return Ok(Line::Complete);
        }
    }
}

/// Discards input up to and including the next newline, one read buffer at a time.
/// Returns `false` at end of input.
pub(crate) async fn skip_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<bool> {
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(false);
        }
        match memchr::memchr(b'\n', chunk) {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(true);
            }
            None => {
                let all = chunk.len();
                reader.consume(all);
            }
        }
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
            let read = match read_bounded(&mut self.reader, &mut line, self.max_message).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(%error, "stdin read failed");
                    return None;
                }
            };
            match read {
                Line::End => return None,
                Line::Complete => {}
                Line::TooLong => {
                    let message = format!("Invalid Request: message longer than {} bytes; discarded", self.max_message);
                    tracing::warn!(limit = self.max_message, "discarding an oversized stdin message");
                    crate::telemetry::rejected(crate::telemetry::Rejected::Malformed);
                    reply_error(&self.writer, Value::Null, -32600, message).await;
                    match skip_line(&mut self.reader).await {
                        Ok(true) => continue,
                        Ok(false) => return None,
                        Err(error) => {
                            tracing::error!(%error, "stdin read failed");
                            return None;
                        }
                    }
                }
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            // One parse for a valid message; only a refused one is parsed again, as JSON,
            // to tell a parse error from an invalid request and to find its id.
            let error = match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(text) {
                Ok(message) => return Some(message),
                Err(error) => error,
            };
            match serde_json::from_slice::<Value>(text) {
                Err(error) => {
                    crate::telemetry::rejected(crate::telemetry::Rejected::Malformed);
                    reply_error(&self.writer, Value::Null, -32700, format!("Parse error: {error}")).await;
                }
                Ok(value) => {
                    reply_error(&self.writer, request_id(&value), -32600, format!("Invalid Request: {error}")).await;
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

#[cfg(test)]
mod tests {
    use super::{Line, read_bounded, skip_line};
    use tokio::io::BufReader;

    #[tokio::test]
    async fn a_long_line_is_cut_off_and_skipped_without_being_held() {
        let input = format!("{}\n{{\"ok\":1}}\nlast", "x".repeat(100_000));
        let mut reader = BufReader::with_capacity(1024, input.as_bytes());
        let mut line = Vec::new();
        assert_eq!(read_bounded(&mut reader, &mut line, 4096).await.unwrap(), Line::TooLong);
        assert!(line.capacity() <= 2 * 4096, "held {} bytes", line.capacity());
        assert!(skip_line(&mut reader).await.unwrap());
        line.clear();
        assert_eq!(read_bounded(&mut reader, &mut line, 4096).await.unwrap(), Line::Complete);
        assert_eq!(line, b"{\"ok\":1}\n");
        line.clear();
        assert_eq!(read_bounded(&mut reader, &mut line, 4096).await.unwrap(), Line::Complete);
        assert_eq!(line, b"last");
        line.clear();
        assert_eq!(read_bounded(&mut reader, &mut line, 4096).await.unwrap(), Line::End);
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_accepted() {
        let input = format!("{}\n", "y".repeat(4096));
        let mut reader = BufReader::with_capacity(100, input.as_bytes());
        let mut line = Vec::new();
        assert_eq!(read_bounded(&mut reader, &mut line, 4096).await.unwrap(), Line::Complete);
        assert_eq!(line.len(), 4097);
    }
}
