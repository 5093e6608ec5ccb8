//! The accept loop: hyper's HTTP/1 server with the `[http]` connection limits.
//!
//! Owns: accepting connections (each with `TCP_NODELAY`, DESIGN.md §7), the caps on open
//! connections in all and per client address, the header-read timeout (hyper's own), the
//! idle timeout (no bytes either way), and handing each request to the router with its
//! `ConnectInfo`.
//! Uses: hyper and hyper-util (the field's server; axum's `serve` has none of these
//! limits), a tokio semaphore for the total.
//! Must not: look inside requests; routes and their body limits are the router's.
//!
//! A client over a cap is answered `503` and closed at once, so refused connections cost
//! no file descriptor beyond the moment; the half-sent headers of a slow client are
//! dropped after `header_read_timeout`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpLimits;

/// How long open connections get to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// What an over-cap client reads before the connection closes.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 39\r\nconnection: close\r\n\r\ntoo many connections, try again later\r\n";

/// Connections open per client address.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One accepted connection's place under both caps; dropping it frees both.
struct Ticket {
    _slot: OwnedSemaphorePermit,
    per_address: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    fn take(&self, slots: &Arc<Semaphore>, ip: IpAddr, cap: usize) -> Option<Ticket> {
        let slot = slots.clone().try_acquire_owned().ok()?;
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_default();
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(Ticket { _slot: slot, per_address: self.clone(), ip })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.per_address.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires, within `limits`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::default();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some(ticket) = per_address.take(&slots, peer.ip(), limits.max_connections_per_address) else {
            tracing::debug!(%peer, "connection refused: too many open");
            // Best effort and never waiting: the client may not even be reading.
            let _ = tcp.try_write(BUSY);
            continue;
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let connection = Connection { builder: builder.clone(), router: router.clone(), peer, idle: limits.idle_timeout };
        tracker.spawn(connection.run(tcp, ticket, shutdown.clone()));
    }
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
    Ok(())
}

/// One accepted connection.
struct Connection {
    builder: Arc<hyper::server::conn::http1::Builder>,
    router: Router,
    peer: SocketAddr,
    idle: Duration,
}

impl Connection {
    /// Serves requests until the client leaves, the connection idles, or shutdown. An
    /// idle connection is shut down gracefully (a response in progress finishes); one
    /// where nothing moves for a second idle period is dropped.
    async fn run(self, tcp: TcpStream, _ticket: Ticket, shutdown: CancellationToken) {
        let activity = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(Watched { inner: tcp, activity: activity.clone() });
        let (router, peer) = (self.router, self.peer);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let connection = self.builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut seen = activity.load(Ordering::Relaxed);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended");
                    }
                    return;
                }
                () = tokio::time::sleep(self.idle) => {
                    let now = activity.load(Ordering::Relaxed);
                    if now != seen {
                        seen = now;
                        continue;
                    }
                    if draining {
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                () = shutdown.cancelled(), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

/// The socket, counting every read and write so the idle check sees traffic.
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
