//! A transport wrapper that routes downstream progress notifications to the call that
//! asked for them, and log lines to the one session that can own them, in wire order.
//!
//! rmcp hands each incoming notification to a freshly spawned task, so a handler-based
//! `on_progress` can run after the call's response has already been delivered: the last
//! progress notification would race the result. Routing here, inside `receive`, happens
//! before rmcp sees the response that follows, so a call that drains its channel after the
//! response has arrived has every notification the downstream sent before it.

// Sampling and logging are deprecated by SEP-2577; Airlock still relays them for the
// clients and servers that use them.
#![allow(deprecated)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use rmcp::RoleClient;
use rmcp::model::{JsonRpcMessage, ProgressNotificationParam, ProgressToken, ServerNotification};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::mpsc;

use super::handler::{CallRelays, Route, UpstreamAsk};

/// Progress kept for a token nobody has registered yet, bounded.
const ORPHANS_MAX: usize = 256;

type Sender = mpsc::UnboundedSender<ProgressNotificationParam>;

#[derive(Default)]
struct Inner {
    routes: HashMap<ProgressToken, Sender>,
    /// rmcp picks the progress token while sending the request, so a fast downstream can
    /// report progress before the caller has registered its route: keep it until then.
    orphans: VecDeque<ProgressNotificationParam>,
}

/// Where progress for an in-flight downstream request goes, keyed by the progress token
/// rmcp put on the outbound request.
#[derive(Clone, Default)]
pub(crate) struct ProgressRoutes {
    inner: Arc<Mutex<Inner>>,
}

impl ProgressRoutes {
    /// Starts routing progress for `token`; the route ends when the returned guard drops.
    pub(crate) fn register(
        &self,
        token: ProgressToken,
    ) -> (ProgressRoute, mpsc::UnboundedReceiver<ProgressNotificationParam>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.orphans.retain(|orphan| {
            if orphan.progress_token == token {
                let _ = tx.send(orphan.clone());
                false
            } else {
                true
            }
        });
        inner.routes.insert(token.clone(), tx);
        drop(inner);
        (ProgressRoute { routes: self.clone(), token }, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers `params` to its call, or keeps it until the call registers.
    fn deliver(&self, params: ProgressNotificationParam) {
        let mut inner = self.lock();
        if let Some(tx) = inner.routes.get(&params.progress_token) {
            let _ = tx.send(params);
            return;
        }
        if inner.orphans.len() == ORPHANS_MAX {
            inner.orphans.pop_front();
        }
        inner.orphans.push_back(params);
    }
}

/// Unregisters a progress route on drop.
pub(crate) struct ProgressRoute {
    routes: ProgressRoutes,
    token: ProgressToken,
}

impl Drop for ProgressRoute {
    fn drop(&mut self) {
        self.routes.lock().routes.remove(&self.token);
    }
}

/// Wraps a downstream transport and diverts routed progress notifications.
pub(crate) struct Tap<T> {
    inner: T,
    routes: ProgressRoutes,
    calls: Arc<CallRelays>,
}

impl<T> Tap<T> {
    pub(crate) fn new(inner: T, routes: ProgressRoutes, calls: Arc<CallRelays>) -> Self {
        Self { inner, routes, calls }
    }
}

impl<T> Transport<RoleClient> for Tap<T>
where
    T: Transport<RoleClient>,
{
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            let message = self.inner.receive().await?;
            match message {
                JsonRpcMessage::Notification(notification) => match notification.notification {
                    ServerNotification::ProgressNotification(progress) => {
                        self.routes.deliver(progress.params);
                    }
                    // A log line carries no association with a call: it goes to the call in
                    // flight, in order with its result, only while every call in flight
                    // belongs to one session. Otherwise nobody gets it.
                    ServerNotification::LoggingMessageNotification(log) => match self.calls.sole_session() {
                        Route::Call(call) => {
                            let _ = call.send(UpstreamAsk::Log(log.params));
                        }
                        Route::NoCall => tracing::debug!("downstream log line with no call in flight; dropped"),
                        Route::Ambiguous(sessions) => {
                            let dropped = self.calls.dropped_log();
                            tracing::warn!(sessions = sessions.len(), dropped, "downstream log line while calls of several sessions are in flight; dropped");
                        }
                    },
                    other => {
                        return Some(JsonRpcMessage::Notification(rmcp::model::JsonRpcNotification {
                            notification: other,
                            ..notification
                        }));
                    }
                },
                other => return Some(other),
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
