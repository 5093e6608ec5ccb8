//! The client side: find the data dir's gateway, say hello, send requests.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{ControlError, Hello, HelloReply, Mode, PROTOCOL, Reply, Request, Welcome, line, read_line};

/// Connects to `<data_dir>/airlock.sock`. `NotRunning` when there is no socket or nothing
/// listens on it (a stale socket of a dead gateway).
pub async fn connect(data_dir: &Path) -> Result<UnixStream, ControlError> {
    let path = super::socket_path(data_dir);
    if path.as_os_str().len() > super::MAX_SOCKET_PATH {
        return Err(ControlError::PathTooLong(path));
    }
    match UnixStream::connect(&path).await {
        Ok(stream) => Ok(stream),
        Err(error)
            if matches!(error.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            Err(ControlError::NotRunning(data_dir.to_path_buf()))
        }
        Err(source) => Err(ControlError::Io { path, source }),
    }
}

/// An open, welcomed connection.
pub struct Connection {
    pub welcome: Welcome,
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

async fn hello(data_dir: &Path, mode: Mode, config: Option<PathBuf>) -> Result<Connection, ControlError> {
    let stream = connect(data_dir).await?;
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    let path = super::socket_path(data_dir);
    writer.write_all(&line(&Hello { airlock: PROTOCOL, mode, config })).await.map_err(super::io_error(&path))?;
    let reply = read_line(&mut reader).await.map_err(super::io_error(&path))?.ok_or(ControlError::Closed)?;
    match serde_json::from_slice::<HelloReply>(&reply) {
        Ok(HelloReply::Ok(welcome)) => Ok(Connection { welcome, reader, writer }),
        Ok(HelloReply::Refused(refusal)) => Err(ControlError::Refused(refusal)),
        Err(error) => Err(ControlError::Protocol(error.to_string())),
    }
}

/// An `mcp` connection: after this, MCP lines both ways.
pub async fn attach(data_dir: &Path, config: Option<PathBuf>) -> Result<Connection, ControlError> {
    hello(data_dir, Mode::Mcp, config).await
}

/// A `handoff` connection: the client's stdin and stdout (`fds`) passed to the gateway,
/// which serves the session on them; the socket, blocking, then carries the gateway's
/// mirror of that session (`handoff::watch`).
pub(super) async fn hand_off(
    data_dir: &Path,
    config: Option<PathBuf>,
    fds: &(std::os::fd::OwnedFd, std::os::fd::OwnedFd),
) -> Result<(Welcome, std::os::unix::net::UnixStream), ControlError> {
    use std::os::fd::AsFd as _;
    let Connection { welcome, reader, writer } = hello(data_dir, Mode::Handoff, config).await?;
    let path = super::socket_path(data_dir);
    if !reader.buffer().is_empty() {
        return Err(ControlError::Protocol("bytes after the welcome of a handoff".into()));
    }
    let stream = reader.into_inner().reunite(writer).map_err(|_| ControlError::Protocol("the socket's halves do not match".into()))?;
    super::handoff::send_fds(&stream, fds.0.as_fd(), fds.1.as_fd()).await.map_err(super::io_error(&path))?;
    let socket = stream.into_std().map_err(super::io_error(&path))?;
    socket.set_nonblocking(false).map_err(super::io_error(&path))?;
    Ok((welcome, socket))
}

/// An `op` connection.
pub async fn connect_op(data_dir: &Path, config: Option<PathBuf>) -> Result<Connection, ControlError> {
    hello(data_dir, Mode::Op, config).await
}

impl Connection {
    /// Sends `request`; read its answer from the returned stream.
    pub async fn request(&mut self, request: &Request) -> Result<OpStream<'_>, ControlError> {
        self.writer.write_all(&line(request)).await.map_err(|source| ControlError::Io { path: PathBuf::from("airlock.sock"), source })?;
        Ok(OpStream { connection: self, finished: false })
    }

    /// Sends `request` and returns its `done` value, ignoring streamed items.
    pub async fn call(&mut self, request: &Request) -> Result<serde_json::Value, ControlError> {
        let mut stream = self.request(request).await?;
        loop {
            match stream.next().await? {
                OpLine::Item(_) => {}
                OpLine::Done(value) => return Ok(value),
            }
        }
    }
}

/// One line of an answer, as the client sees it (errors come as `Err`).
#[derive(Debug, Clone, PartialEq)]
pub enum OpLine {
    Item(serde_json::Value),
    Done(serde_json::Value),
}

/// The lines answering one request.
pub struct OpStream<'a> {
    connection: &'a mut Connection,
    finished: bool,
}

impl OpStream<'_> {
    /// The next line; after `Done` (or an error) the answer is over and this returns
    /// `Closed`.
    pub async fn next(&mut self) -> Result<OpLine, ControlError> {
        if self.finished {
            return Err(ControlError::Closed);
        }
        let path = PathBuf::from("airlock.sock");
        let line = read_line(&mut self.connection.reader)
            .await
            .map_err(|source| ControlError::Io { path, source })?
            .ok_or(ControlError::Closed)?;
        match serde_json::from_slice::<Reply>(&line) {
            Ok(Reply::Item(value)) => Ok(OpLine::Item(value)),
            Ok(Reply::Done(value)) => {
                self.finished = true;
                Ok(OpLine::Done(value))
            }
            Ok(Reply::Error(refusal)) => {
                self.finished = true;
                Err(ControlError::Refused(refusal))
            }
            Err(error) => Err(ControlError::Protocol(error.to_string())),
        }
    }
}
