//! The MCP client side: one supervised connection per downstream server, and the
//! aggregated, namespaced tool catalog.
//!
//! Owns: starting downstreams (in parallel), restarting them with backoff, their tool
//! lists, forwarding one call with its progress, cancellation and elicitation, and
//! following the task a downstream makes of a call.
//! Uses: `manifest` for server definitions.
//! Must not: decide whether a call may run (policy), or write the audit log.

// logging/setLevel is deprecated by SEP-2577; Airlock still passes it on.
#![allow(deprecated)]

mod call;
mod catalog;
mod connect;
pub mod freshness;
mod handler;
mod refresh;
mod resources;
mod session;
pub(crate) mod sse_client;
mod tap;
mod task;

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::Tool;
use rmcp::service::Peer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::manifest::Manifest;

pub use call::{CallStep, ForwardError, PendingCall, UpstreamAsk};
pub use task::RemoteTask;
pub use handler::{CallOwner, UpstreamRefusal};
pub use session::SessionChildren;
pub use catalog::{Catalog, CatalogEntry, Namespacing};
pub use resources::{ResourceIndex, ResourceOwner};

use handler::CallRelays;
use tap::ProgressRoutes;

/// How long start-up waits for every downstream's first connection attempt.
const FIRST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where one downstream stands.
#[derive(Debug, Clone)]
pub enum Health {
    /// The first connection attempt has not finished.
    Starting,
    /// Connected and serving.
    Ready,
    /// Not connected; calls fail until a restart succeeds.
    Down {
        /// Why the last connection ended or failed.
        reason: String,
    },
}

/// One downstream server and its live connection, if any.
pub struct Server {
    manifest: Manifest,
    peer: RwLock<Option<Peer<RoleClient>>>,
    health: RwLock<Health>,
    /// `None` until the first tool list arrives.
    tools: RwLock<Option<Vec<Tool>>>,
    /// The cache hints of that list, and when it came.
    tools_fetched: RwLock<Option<freshness::Fetched>>,
    /// Coalesces `tools/list_changed` (see `refresh.rs`).
    refresh: refresh::Refresh,
    progress: ProgressRoutes,
    calls: Arc<CallRelays>,
    resources: resources::ResourceCache,
    /// Stops this server alone (a reload removed or replaced it); a child of the
    /// gateway's shutdown.
    stop: CancellationToken,
}

impl Server {
    fn new(manifest: Manifest, stop: CancellationToken) -> Self {
        Self {
            stop,
            manifest,
            peer: RwLock::new(None),
            health: RwLock::new(Health::Starting),
            tools: RwLock::new(None),
            tools_fetched: RwLock::new(None),
            refresh: refresh::Refresh::default(),
            progress: ProgressRoutes::default(),
            calls: Arc::default(),
            resources: resources::ResourceCache::default(),
        }
    }

    /// The server's name, as in its manifest.
    pub fn name(&self) -> &str {
        self.manifest.name.as_str()
    }

    /// The manifest this server was started from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the server stands now.
    pub fn health(&self) -> Health {
        self.health.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_health(&self, health: Health) {
        *self.health.write().unwrap_or_else(PoisonError::into_inner) = health;
    }

    fn peer(&self) -> Option<Peer<RoleClient>> {
        self.peer.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_peer(&self, peer: Option<Peer<RoleClient>>) {
        // A new connection may serve other resources than the last one.
        self.resources.invalidate();
        *self.peer.write().unwrap_or_else(PoisonError::into_inner) = peer;
    }

    fn tools(&self) -> Vec<Tool> {
        self.listing().unwrap_or_default()
    }

    /// The last tool list, or `None` before the first one arrived.
    fn listing(&self) -> Option<Vec<Tool>> {
        self.tools.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The tool `name` as this connection lists it now.
    pub fn offered(&self, name: &str) -> Option<Tool> {
        let tools = self.tools.read().unwrap_or_else(PoisonError::into_inner);
        tools.as_ref().and_then(|tools| tools.iter().find(|t| t.name == name).cloned())
    }

    fn set_tools(&self, (tools, fetched): (Vec<Tool>, freshness::Fetched)) {
        *self.tools.write().unwrap_or_else(PoisonError::into_inner) = Some(tools);
        *self.tools_fetched.write().unwrap_or_else(PoisonError::into_inner) = Some(fetched);
    }

    fn tools_fetched(&self) -> Option<freshness::Fetched> {
        *self.tools_fetched.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What `Downstreams::apply` did, by server name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerChanges {
    /// Started: new manifests.
    pub added: Vec<String>,
    /// Stopped: manifests gone.
    pub removed: Vec<String>,
    /// Stopped and started again: changed manifests.
    pub restarted: Vec<String>,
}

/// Every downstream server, supervised, and the catalog built from their tools.
pub struct Downstreams {
    /// In manifest order; replaced whole by `apply` (a reload).
    servers: RwLock<Vec<Arc<Server>>>,
    namespacing: Namespacing,
    catalog: watch::Sender<Arc<Catalog>>,
    rebuild: Mutex<()>,
    resource_updates: tokio::sync::broadcast::Sender<rmcp::model::ResourceUpdatedNotificationParam>,
    /// Refused downstream requests, for the gateway to record (this module writes no log).
    refusals: tokio::sync::mpsc::UnboundedSender<UpstreamRefusal>,
    refused: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<UpstreamRefusal>>>,
    /// True once the servers started with the gateway each had their first attempt.
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
}

impl Downstreams {
    /// Starts every downstream in parallel and waits until each has connected or failed
    /// once. A server that fails is reported and retried in the background; the others serve.
    pub async fn start(manifests: Vec<Manifest>, namespacing: Namespacing) -> Arc<Self> {
        let this = Self::start_in_background(manifests, namespacing);
        this.ready().await;
        this
    }

    /// Starts every downstream in parallel and returns at once: `ready` says when each
    /// has connected or failed once (what `start` waits for). The gateway answers
    /// `initialize` meanwhile and holds what needs the catalog until then.
    pub fn start_in_background(manifests: Vec<Manifest>, namespacing: Namespacing) -> Arc<Self> {
        let shutdown = CancellationToken::new();
        let servers: Vec<Arc<Server>> =
            manifests.into_iter().map(|m| Arc::new(Server::new(m, shutdown.child_token()))).collect();
        let (catalog, _) = watch::channel(Arc::new(Catalog::default()));
        let (refusals, refused) = tokio::sync::mpsc::unbounded_channel();
        let this = Arc::new(Self {
            servers: RwLock::new(servers.clone()),
            namespacing,
            catalog,
            rebuild: Mutex::new(()),
            resource_updates: tokio::sync::broadcast::channel(64).0,
            refusals,
            refused: Mutex::new(Some(refused)),
            ready: watch::channel(false).0,
            shutdown,
        });
        let first_attempts = this.launch(&servers);
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            first_attempts.await;
            if let Some(this) = weak.upgrade() {
                this.rebuild_catalog();
                this.ready.send_replace(true);
            }
        });
        this
    }

    /// Returns once every downstream started with the gateway has connected or failed
    /// once (or `FIRST_ATTEMPT_TIMEOUT` passed), with the catalog built from them.
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail here.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Starts supervising `servers`; the future returned completes once each has
    /// connected or failed once (or a shutdown ended its supervisor).
    fn launch(self: &Arc<Self>, servers: &[Arc<Server>]) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut first_attempts = Vec::new();
        for server in servers {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(connect::supervise(server.clone(), Arc::downgrade(self), server.stop.clone(), done_tx));
            first_attempts.push(done_rx);
            tokio::spawn(refresh::run(server.clone(), Arc::downgrade(self), server.stop.clone()));
        }
        async move {
            let waiting = futures::future::join_all(first_attempts);
            if tokio::time::timeout(FIRST_ATTEMPT_TIMEOUT, waiting).await.is_err() {
                tracing::warn!("some downstream servers are still starting; serving the others");
            }
        }
    }

    /// Brings the servers in line with `manifests` (a reload): a server whose manifest is
    /// unchanged keeps its connection and its calls in flight; a new one starts; a removed
    /// one stops; a changed one stops and starts again from its new manifest. Waits for
    /// the first connection attempt of those started, then publishes the catalog.
    /// Callers serialise calls (the reloader holds its lock).
    pub async fn apply(self: &Arc<Self>, manifests: Vec<Manifest>) -> ServerChanges {
        let current = self.servers();
        let mut changes = ServerChanges::default();
        let mut next = Vec::new();
        let mut started = Vec::new();
        for manifest in manifests {
            let name = manifest.name.as_str().to_owned();
            match current.iter().find(|s| s.name() == name) {
                Some(same) if *same.manifest() == manifest => next.push(same.clone()),
                found => {
                    if found.is_some() {
                        changes.restarted.push(name);
                    } else {
                        changes.added.push(name);
                    }
                    let server = Arc::new(Server::new(manifest, self.shutdown.child_token()));
                    started.push(server.clone());
                    next.push(server);
                }
            }
        }
        for old in &current {
            let kept = next.iter().any(|s| Arc::ptr_eq(s, old));
            if !kept {
                if !next.iter().any(|s| s.name() == old.name()) {
                    changes.removed.push(old.name().to_owned());
                }
                // Its connection drops, which ends a stdio child.
                old.stop.cancel();
            }
        }
        *self.servers.write().unwrap_or_else(PoisonError::into_inner) = next;
        self.launch(&started).await;
        self.rebuild_catalog();
        changes
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// A receiver that wakes whenever the catalog changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.subscribe()
    }

    /// How exposed names are formed.
    pub fn namespacing(&self) -> &Namespacing {
        &self.namespacing
    }

    /// Every connected server with its client, in manifest order (for pass-through of
    /// prompts and resources).
    /// `(ttlMs, cacheScope)` of the aggregated tool list now, from what each listed
    /// server said of its own (`freshness`). A server whose promised freshness ran out is
    /// asked for its list again, so the next listing is fresh.
    pub fn tools_freshness(&self) -> (Option<u64>, Option<rmcp::model::CacheScope>) {
        let mut hints = freshness::CacheHints::default();
        for server in self.servers().iter() {
            let Some(fetched) = server.tools_fetched() else { continue };
            if fetched.ran_out() {
                server.refresh.request();
            }
            let (ttl, scope) = fetched.now();
            hints.add(ttl, scope);
        }
        hints.aggregate()
    }

    pub fn connected(&self) -> Vec<(Arc<Server>, Peer<RoleClient>)> {
        self.servers().iter().filter_map(|s| s.peer().map(|p| (s.clone(), p))).collect()
    }

    /// `notifications/resources/updated` from any downstream.
    pub fn resource_updates(&self) -> tokio::sync::broadcast::Receiver<rmcp::model::ResourceUpdatedNotificationParam> {
        self.resource_updates.subscribe()
    }

    /// The downstream requests refused for want of one owning session, as they happen.
    /// There is one receiver; the second call gets `None`.
    pub fn take_refusals(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<UpstreamRefusal>> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn report_refusal(&self, refusal: UpstreamRefusal) {
        let _ = self.refusals.send(refusal);
    }

    /// The session-scoped connections of a new client session (none started yet).
    pub fn session_children(self: &Arc<Self>) -> SessionChildren {
        SessionChildren::new(Arc::downgrade(self), &self.shutdown)
    }

    /// Every server now, in manifest order.
    pub fn servers(&self) -> Vec<Arc<Server>> {
        self.servers.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Rebuilds the catalog from every server's last known tools; notifies subscribers
    /// only when something a client can see changed.
    fn rebuild_catalog(&self) {
        let _serialized = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        let next = Catalog::build(&self.servers(), &self.namespacing);
        self.catalog.send_if_modified(|current| {
            if current.same_tools(&next) {
                false
            } else {
                *current = Arc::new(next);
                true
            }
        });
    }

    /// Passes a client's `logging/setLevel` to every connected downstream (best effort:
    /// servers without logging answer with an error, which is ignored).
    pub async fn set_level(&self, params: rmcp::model::SetLevelRequestParams) {
        let peers: Vec<_> = self.servers().iter().filter_map(|s| s.peer().map(|p| (s.name().to_owned(), p))).collect();
        let sets = peers.iter().map(|(name, peer)| {
            let params = params.clone();
            async move {
                if let Err(error) = peer.set_level(params).await {
                    tracing::debug!(server = %name, %error, "downstream did not take logging/setLevel");
                }
            }
        });
        futures::future::join_all(sets).await;
    }

    /// Stops every downstream (children are killed when their transport drops).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}
