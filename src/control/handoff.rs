//! Handing a stdio client's pipes to the gateway (mode `handoff`): the bridge of
//! `airlock serve` passes its stdin and stdout over the control socket (`SCM_RIGHTS`) and
//! the gateway serves the MCP session on them itself. A message then goes from the client
//! straight to the gateway and back, instead of through the bridge's process as well: two
//! process wake-ups fewer per call, which were a quarter of a sequential call over stdio.
//!
//! The bridge must still answer what is in flight when the gateway dies, so the gateway
//! mirrors to it, over the same socket, the bytes it read from the client (after reading
//! them) and the bytes it wrote to the client (after writing them). The bridge reads the
//! mirror a few milliseconds at a time, off every call's path, and keeps from it the same
//! memory of the session as when it relays. When the socket ends without the end frame,
//! the gateway is gone: the bridge takes its pipes back and relays (see `bridge`).
//!
//! Frames, gateway → bridge, once the descriptors are passed: kind (one byte: `I` read
//! from the client, `O` written to it, `E` the session is over) ‖ length (u32 BE) ‖ bytes.
//! The bridge sends nothing after its descriptor message; its end of the socket closing
//! means it is gone, and the gateway ends the session.

use std::io::{self, IoSlice, IoSliceMut, Read as _};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, recvmsg,
    sendmsg,
};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::gateway::stdio::{ClientIn, ClientOut, stream_of};

/// Bytes the gateway read from the client.
const READ: u8 = b'I';
/// Bytes the gateway wrote to the client.
const WRITTEN: u8 = b'O';
/// The session ended; nothing follows.
const END: u8 = b'E';
const FRAME_HEAD: usize = 5;

/// How long the bridge lets the mirror gather between two reads: it is read only to be
/// known if the gateway dies, so reading it less often saves the bridge's wake-ups (the
/// socket buffer holds far more than a few milliseconds of calls).
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// Sends the client's stdin and stdout to the gateway, with one byte to carry them.
pub(super) async fn send_fds(stream: &UnixStream, input: BorrowedFd<'_>, output: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [input, output];
    stream
        .async_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("no room for two descriptors"));
            }
            Ok(sendmsg(stream, &[IoSlice::new(b"\n")], &mut control, SendFlags::NOSIGNAL)?)
        })
        .await
        .map(|_| ())
}

/// Receives the two descriptors a bridge sent (stdin, then stdout).
pub(super) async fn receive_fds(read: &OwnedReadHalf) -> io::Result<(OwnedFd, OwnedFd)> {
    let stream: &UnixStream = read.as_ref();
    let mut received = stream
        .async_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = recvmsg(stream, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
            // Owned as they arrive: whatever is wrong with the message, they are closed.
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            if msg.bytes == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the bridge closed before passing its pipes"));
            }
            if msg.flags.contains(ReturnFlags::CTRUNC) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "more descriptors than stdin and stdout"));
            }
            Ok(fds)
        })
        .await?
        .into_iter();
    match (received.next(), received.next(), received.next()) {
        (Some(input), Some(output), None) => Ok((input, output)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "expected exactly two descriptors (stdin, stdout)")),
    }
}

/// The client's pipes as streams the runtime serves: each must be a pipe or a socket (what
/// MCP clients give a server's stdin and stdout); anything else is refused.
pub(super) fn client_streams(input: OwnedFd, output: OwnedFd) -> io::Result<(ClientIn, ClientOut)> {
    let refused = |which| io::Error::new(io::ErrorKind::InvalidInput, format!("the bridge's {which} is not a pipe or a socket"));
    let input = stream_of(input).ok_or_else(|| refused("stdin"))?.into_input()?;
    let output = stream_of(output).ok_or_else(|| refused("stdout"))?.into_output()?;
    Ok((input, output))
}

/// Mirror bytes the gateway holds for its bridge before it reads no more from the client
/// until the bridge has taken them: the back-pressure a relayed session has, without
/// holding up what is written (a long answer queues whole).
const MAX_PENDING: usize = 1 << 20;
/// How long the end of a session waits for the bridge to take the rest of the mirror.
const END_WITHIN: Duration = Duration::from_secs(5);

/// The gateway's side of the mirror: frames queued in order and written as the socket
/// takes them, never waiting on the call path.
pub(super) struct Mirror {
    socket: OwnedWriteHalf,
    pending: Mutex<Pending>,
    wake: Arc<Notify>,
    /// Cancelled when the socket fails: the bridge is gone, and so is the session.
    pub(super) gone: CancellationToken,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Where the unwritten bytes start.
    sent: usize,
    /// The reader waiting for the backlog to shrink.
    reader: Option<Waker>,
}

impl Pending {
    fn len(&self) -> usize {
        self.bytes.len() - self.sent
    }
}

impl Mirror {
    /// Starts the task that writes what the socket could not take at once.
    pub(super) fn start(socket: OwnedWriteHalf) -> Arc<Mirror> {
        let wake = Arc::new(Notify::new());
        let mirror = Arc::new(Mirror { socket, pending: Mutex::default(), wake: wake.clone(), gone: CancellationToken::new() });
        tokio::spawn(flush_when_writable(Arc::downgrade(&mirror), wake));
        mirror
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame. What the gateway read goes out now, with whatever is queued before
    /// it (the bridge must know a request as soon as it can); what it wrote is left to
    /// the flushing task, which sends the answers of many calls in one write when busy (a
    /// lost one only means the bridge answers that request again, with an error).
    fn frame(&self, kind: u8, bytes: &[u8]) {
        if self.gone.is_cancelled() {
            return;
        }
        let mut pending = self.lock();
        let was_empty = pending.len() == 0;
        pending.bytes.push(kind);
        pending.bytes.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        pending.bytes.extend_from_slice(bytes);
        if kind == READ {
            self.write_some(&mut pending);
        }
        if was_empty && pending.len() > 0 {
            self.wake.notify_one();
        }
    }

    /// True (and `cx` woken later) while the bridge has not taken `MAX_PENDING` bytes.
    fn backlogged(&self, cx: &Context<'_>) -> bool {
        let mut pending = self.lock();
        if pending.len() <= MAX_PENDING || self.gone.is_cancelled() {
            return false;
        }
        pending.reader = Some(cx.waker().clone());
        true
    }

    /// Writes what the socket takes without waiting; false once it failed.
    fn write_some(&self, pending: &mut Pending) -> bool {
        let mut ok = true;
        while pending.len() > 0 {
            match self.socket.try_write(&pending.bytes[pending.sent..]) {
                Ok(n) => pending.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    pending.sent = pending.bytes.len();
                    self.gone.cancel();
                    ok = false;
                }
            }
        }
        if pending.len() == 0 {
            pending.bytes.clear();
            pending.sent = 0;
        } else if pending.sent > pending.bytes.len() / 2 {
            let sent = pending.sent;
            pending.bytes.drain(..sent);
            pending.sent = 0;
        }
        if (pending.len() <= MAX_PENDING || !ok)
            && let Some(reader) = pending.reader.take()
        {
            reader.wake();
        }
        ok
    }

    /// Ends the mirror: the end frame, then the rest written out (or the bridge gone).
    pub(super) async fn end(&self) {
        self.frame(END, &[]);
        let flushed = async {
            loop {
                {
                    let mut pending = self.lock();
                    if !self.write_some(&mut pending) || pending.len() == 0 {
                        return;
                    }
                }
                if self.socket.writable().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(END_WITHIN, flushed).await;
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        // Lets the flushing task see that the mirror is gone.
        self.wake.notify_one();
    }
}

/// Writes what a frame left behind once the socket can take it. Holds the mirror only
/// while there is something to write, so it ends with the session.
async fn flush_when_writable(mirror: std::sync::Weak<Mirror>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let Some(m) = mirror.upgrade() else { return };
            let more = {
                let mut pending = m.lock();
                m.write_some(&mut pending) && pending.len() > 0
            };
            if !more {
                break;
            }
            tokio::select! {
                ready = m.socket.writable() => if ready.is_err() { return },
                () = m.gone.cancelled() => return,
            }
        }
    }
}

/// The client's stdin as the gateway reads it, each read mirrored once it is read.
pub(super) struct TeeReader {
    inner: ClientIn,
    mirror: Arc<Mirror>,
}

impl TeeReader {
    pub(super) fn new(inner: ClientIn, mirror: Arc<Mirror>) -> Self {
        Self { inner, mirror }
    }
}

impl AsyncRead for TeeReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.mirror.backlogged(cx) {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled
            && buf.filled().len() > before
        {
            self.mirror.frame(READ, &buf.filled()[before..]);
        }
        polled
    }
}

/// The client's stdout as the gateway writes it, each write mirrored once it is written.
pub(super) struct TeeWriter {
    inner: ClientOut,
    mirror: Arc<Mirror>,
}

impl TeeWriter {
    pub(super) fn new(inner: ClientOut, mirror: Arc<Mirror>) -> Self {
        Self { inner, mirror }
    }
}

impl AsyncWrite for TeeWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            self.mirror.frame(WRITTEN, &buf[..*n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves when the bridge's end of the socket closes (its process is gone).
pub(super) async fn bridge_gone(mut read: OwnedReadHalf) {
    use tokio::io::AsyncReadExt as _;
    let mut byte = [0u8; 64];
    loop {
        match read.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            // A bridge sends nothing more; whatever comes is ignored.
            Ok(_) => {}
        }
    }
}

/// How a handed-off session ended, as the bridge saw it.
pub(super) enum Watched {
    /// The gateway said the session is over.
    Ended,
    /// The socket ended without the end frame: the gateway is gone. `tail` is what it had
    /// read of a line it had not read to the end (the client's next line begins with it).
    Lost { tail: Vec<u8> },
}

/// One direction of the mirror, cut into lines.
struct Lines {
    partial: Vec<u8>,
    /// Inside a line longer than `max` (the gateway refused it): skipped to its newline.
    skipping: bool,
    max: usize,
}

impl Lines {
    fn new(max: usize) -> Self {
        Self { partial: Vec::new(), skipping: false, max }
    }

    fn feed(&mut self, mut bytes: &[u8], mut line: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let newline = memchr::memchr(b'\n', bytes);
            let (chunk, rest) = match newline {
                Some(at) => (&bytes[..at], &bytes[at + 1..]),
                None => (bytes, &[][..]),
            };
            if !self.skipping {
                if self.partial.len() + chunk.len() > self.max {
                    self.partial.clear();
                    self.skipping = true;
                } else {
                    self.partial.extend_from_slice(chunk);
                }
            }
            if newline.is_some() {
                if !self.skipping {
                    line(&self.partial);
                }
                self.partial.clear();
                self.skipping = false;
            }
            bytes = rest;
        }
    }
}

/// Which way a mirrored line went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The gateway read it from the client.
    Client,
    /// The gateway wrote it to the client.
    Gateway,
}

/// The bridge's side: reads the mirror (blocking, `DRAIN_EVERY` apart) and hands each
/// whole line to `line`, until the session ends or the gateway is gone.
pub(super) fn watch(mut socket: std::os::unix::net::UnixStream, max_message: usize, mut line: impl FnMut(Side, &[u8])) -> Watched {
    let mut read = Lines::new(max_message);
    // The gateway bounds its own lines; this bound only keeps the bridge's memory flat.
    let mut written = Lines::new(max_message.max(64 << 20));
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    loop {
        let room = buf.len() - have;
        let filled = match socket.read(&mut buf[have..]) {
            Ok(0) | Err(_) => {
                let tail = if read.skipping { Vec::new() } else { std::mem::take(&mut read.partial) };
                return Watched::Lost { tail };
            }
            Ok(n) => {
                have += n;
                n == room
            }
        };
        let mut at = 0;
        while have - at >= FRAME_HEAD {
            let kind = buf[at];
            let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
            let take = len.min(have - at - FRAME_HEAD);
            let body = &buf[at + FRAME_HEAD..at + FRAME_HEAD + take];
            match kind {
                READ => read.feed(body, |l| line(Side::Client, l)),
                WRITTEN => written.feed(body, |l| line(Side::Gateway, l)),
                END => return Watched::Ended,
                // Not a frame of ours: the gateway is not speaking this protocol.
                _ => return Watched::Lost { tail: Vec::new() },
            }
            if take < len {
                // The rest of a long frame comes in the next reads: keep its head, shortened.
                let left = (len - take) as u32;
                buf[at + 1..at + FRAME_HEAD].copy_from_slice(&left.to_be_bytes());
                buf.copy_within(at..at + FRAME_HEAD, 0);
                have = FRAME_HEAD;
                at = 0;
                break;
            }
            at += FRAME_HEAD + len;
        }
        if at > 0 {
            buf.copy_within(at..have, 0);
            have -= at;
        }
        // A full read means more is waiting: read on. Otherwise let the mirror gather.
        if !filled {
            std::thread::sleep(DRAIN_EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut got = Vec::new();
        let mut l = Lines::new(max);
        for c in chunks {
            l.feed(c, |line| got.push(line.to_vec()));
        }
        (got, l.partial)
    }

    #[test]
    fn lines_are_cut_across_reads_and_the_unfinished_one_is_kept() {
        let (got, tail) = lines(100, &[b"{\"a\":1}\n{\"b\"", b":2}\n{\"c", b"\":"]);
        assert_eq!(got, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert_eq!(tail, b"{\"c\":".to_vec());
    }

    #[test]
    fn a_line_past_the_limit_is_skipped_to_its_newline() {
        let (got, tail) = lines(4, &[b"12345", b"678\nok\n"]);
        assert_eq!(got, vec![b"ok".to_vec()]);
        assert!(tail.is_empty());
    }

    fn frame(kind: u8, bytes: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        f.extend_from_slice(bytes);
        f
    }

    #[test]
    fn the_watcher_sorts_frames_into_both_directions_and_stops_at_the_end_frame() {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write as _;
        let big = vec![b'x'; 100_000];
        let mut all = frame(READ, b"{\"id\":1}\n{\"id\"");
        all.extend(frame(READ, b":2}\n"));
        all.extend(frame(WRITTEN, &[&big[..], b"\n"].concat()));
        all.extend(frame(END, b""));
        let writer = std::thread::spawn(move || ours.write_all(&all).unwrap());
        let (mut client, mut gateway) = (Vec::new(), Vec::new());
        let watched = watch(theirs, 1 << 20, |side, l| match side {
            Side::Client => client.push(l.to_vec()),
            Side::Gateway => gateway.push(l.len()),
        });
        writer.join().unwrap();
        assert!(matches!(watched, Watched::Ended));
        assert_eq!(client, vec![b"{\"id\":1}".to_vec(), b"{\"id\":2}".to_vec()]);
        assert_eq!(gateway, vec![100_000]);
    }

    #[test]
    fn a_socket_that_ends_without_the_end_frame_is_a_lost_gateway_with_its_unfinished_line() {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write as _;
        ours.write_all(&frame(READ, b"{\"id\":1}\n{\"id\":2,\"met")).unwrap();
        drop(ours);
        let mut client = Vec::new();
        match watch(theirs, 1 << 20, |side, l| if side == Side::Client { client.push(l.to_vec()) }) {
            Watched::Lost { tail } => assert_eq!(tail, b"{\"id\":2,\"met".to_vec()),
            Watched::Ended => panic!("no end frame was sent"),
        }
        assert_eq!(client, vec![b"{\"id\":1}".to_vec()]);
    }

    #[tokio::test]
    async fn the_mirror_keeps_the_order_of_reads_and_writes_and_ends_with_the_end_frame() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (_read, write) = ours.into_split();
        let mirror = Mirror::start(write);
        mirror.frame(READ, b"{\"id\":1}\n");
        mirror.frame(WRITTEN, b"{\"id\":1,\"result\":{}}\n");
        mirror.frame(READ, b"{\"id\":2}\n");
        mirror.end().await;
        drop(mirror);
        let theirs = theirs.into_std().unwrap();
        theirs.set_nonblocking(false).unwrap();
        let mut seen = Vec::new();
        let watched = tokio::task::spawn_blocking(move || {
            let w = watch(theirs, 1 << 20, |side, l| seen.push((side, String::from_utf8_lossy(l).into_owned())));
            (w, seen)
        });
        let (watched, seen) = watched.await.unwrap();
        assert!(matches!(watched, Watched::Ended));
        assert_eq!(
            seen,
            vec![
                (Side::Client, r#"{"id":1}"#.to_owned()),
                (Side::Gateway, r#"{"id":1,"result":{}}"#.to_owned()),
                (Side::Client, r#"{"id":2}"#.to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn descriptors_pass_over_the_socket_and_stay_usable() {
        let (a, b) = UnixStream::pair().unwrap();
        let (pipe_r, pipe_w) = std::io::pipe().unwrap();
        use std::os::fd::AsFd as _;
        send_fds(&a, pipe_r.as_fd(), pipe_w.as_fd()).await.unwrap();
        let (read, _write) = b.into_split();
        let (r, w) = receive_fds(&read).await.unwrap();
        let mut w = std::fs::File::from(w);
        use std::io::Write as _;
        w.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        std::fs::File::from(r).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[tokio::test]
    async fn a_message_without_two_descriptors_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        a.try_write(b"\n").unwrap();
        let (read, _write) = b.into_split();
        assert!(receive_fds(&read).await.is_err());
    }
}
