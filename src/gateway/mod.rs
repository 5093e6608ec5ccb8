//! The MCP server side: what a client sees when it talks to Airlock.
//!
//! Owns: the `ServerHandler` (one per client session), the call pipeline
//! (resolve → validate → classify → decide → hold → forward → record) and the mapping of
//! pipeline errors to the wire.
//! Uses: `downstream` to forward, `policy`/`approval`/`audit` for the pipeline stages.
//! Must not: speak a transport itself (that is `http` and `stdio` here), or parse config.

// Sampling and logging are deprecated by SEP-2577; Airlock still relays them for the
// clients and servers that use them.
#![allow(deprecated)]

pub mod fingerprints;
mod forward;
mod hold;
mod passthrough;
pub mod reload;
pub mod stdio;
pub mod tasks;
mod task_relay;
pub mod validate;
mod vetting;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorData, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{Peer, RoleServer, ServerHandler};
use tracing::Instrument;

use rmcp::model::Tool;

use crate::approval::Broker;
use crate::audit::{AuditError, AuditLog, Record, RecordKind};
use crate::config::NewTools;
use crate::downstream::{Catalog, Downstreams};
use crate::policy::{LimitBackend, PolicySet};
use fingerprints::Fingerprints;
pub use reload::{ActivePolicy, Change, Loader, ReloadError, ReloadReport, Reloader, Sources};
pub use vetting::{Vetted, VettedTool, vet_stored};
use validate::SchemaCache;
use crate::identity::{Authenticator, Caller};

/// How a client reached Airlock; recorded with its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// stdin/stdout of `airlock serve`.
    Stdio,
    /// Streamable HTTP at `/mcp`.
    StreamableHttp,
    /// Legacy HTTP+SSE at `/sse` + `/message`.
    LegacySse,
    /// The control socket (`<data_dir>/airlock.sock`): a stdio client relayed by
    /// `airlock serve`, or another local peer.
    Socket,
}

/// What a gateway is built from.
pub struct Parts {
    /// Started downstreams (their first attempts may still be running: the gateway
    /// holds what needs the catalog until `Downstreams::ready`).
    pub downstreams: Arc<Downstreams>,
    /// Who callers are.
    pub authenticator: Arc<Authenticator>,
    /// The audit log every step is recorded in.
    pub audit: AuditLog,
    /// The rules.
    pub policies: PolicySet,
    /// Where the rules' rate limits count (in memory, or shared by the replicas).
    pub limits: LimitBackend,
    /// Accepted tool fingerprints.
    pub fingerprints: Fingerprints,
    /// Pending and settled approvals.
    pub approvals: Broker,
    /// How holds behave.
    pub holds: HoldSettings,
    /// How tools added at run time come in (`[gateway] new_tools`).
    pub new_tools: NewTools,
    /// Held calls that clients took as MCP tasks.
    pub tasks: tasks::TaskStore,
}

/// How a held call behaves while it waits.
#[derive(Debug, Clone)]
pub struct HoldSettings {
    /// Interval of `notifications/progress` while waiting.
    pub progress_every: std::time::Duration,
    /// How long a client has to answer a downstream's question in an approved call.
    pub continue_within: std::time::Duration,
    /// Base URL of the approver page and API (`{public_url}/approvals/{id}`), when served.
    pub public_url: Option<String>,
}

/// State shared by every session.
pub struct Gateway {
    downstreams: Arc<Downstreams>,
    authenticator: Arc<Authenticator>,
    audit: AuditLog,
    /// The policy set in force: each call loads it once, so exactly one set decides it;
    /// a reload replaces it whole (`reload.rs`), and waiting holds watch it.
    policy: tokio::sync::watch::Sender<Arc<ActivePolicy>>,
    /// Where every policy set's limits count: chosen at start, kept across reloads.
    limit_backend: LimitBackend,
    fingerprints: Fingerprints,
    new_tools: NewTools,
    /// The catalog clients are served: vetted before it is published.
    catalog: tokio::sync::watch::Sender<Arc<Vetted>>,
    /// True once the catalog holds every downstream's first tool list, vetted: tool
    /// lists and calls wait for it (`initialize` does not).
    ready: tokio::sync::watch::Sender<bool>,
    approvals: Broker,
    holds: HoldSettings,
    tasks: tasks::TaskStore,
    schemas: SchemaCache,
    /// Legacy-era peers to tell about tool-list changes.
    listeners: Mutex<Vec<Peer<RoleServer>>>,
    /// Who subscribed to which resource: updates go only to them.
    subscribers: passthrough::Subscribers,
    /// Distinguishes this run's session and call ids from earlier runs'.
    boot: String,
    next_session: AtomicU64,
    next_call: AtomicU64,
    /// Sessions alive now, of every channel (the control socket's idle exit and status).
    live_sessions: Arc<AtomicU64>,
    /// Held while a catalog is vetted and published: the catalog relay and an operator's
    /// `tools accept` refresh one at a time.
    vetting: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// Builds the gateway, records `gateway_started` (with each server's health as it
    /// stands, usually `Starting`) and the start's `config_loaded` in one group (one sync),
    /// and starts the task that vets the catalog once the downstreams are ready, opens the
    /// gateway, and then relays catalog changes.
    pub async fn start(parts: Parts, starting: &reload::Starting) -> Result<Arc<Self>, AuditError> {
        let gateway = Arc::new(Self {
            downstreams: parts.downstreams,
            authenticator: parts.authenticator,
            audit: parts.audit,
            policy: tokio::sync::watch::channel(Arc::new(ActivePolicy::new(parts.policies, &parts.limits))).0,
            limit_backend: parts.limits,
            fingerprints: parts.fingerprints,
            new_tools: parts.new_tools,
            catalog: tokio::sync::watch::channel(Arc::new(Vetted::default())).0,
            ready: tokio::sync::watch::channel(false).0,
            approvals: parts.approvals,
            holds: parts.holds,
            tasks: parts.tasks,
            schemas: SchemaCache::new(),
            listeners: Mutex::new(Vec::new()),
            subscribers: passthrough::Subscribers::default(),
            boot: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            next_session: AtomicU64::new(1),
            next_call: AtomicU64::new(1),
            live_sessions: Arc::new(AtomicU64::new(0)),
            vetting: tokio::sync::Mutex::new(()),
        });
        // Subscribed before the first vetting, so no change between the two is missed.
        let changes = gateway.downstreams.subscribe();
        let catalog = gateway.downstreams.catalog();
        let servers: Vec<serde_json::Value> = gateway
            .downstreams
            .servers()
            .iter()
            .map(|s| serde_json::json!({"name": s.name(), "health": format!("{:?}", s.health())}))
            .collect();
        let started = Record::new(RecordKind::GatewayStarted)
            .detail(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "boot": gateway.boot,
                "servers": servers,
                "tools": catalog.len(),
            }));
        let _recorded = gateway.audit.append_all(vec![started, starting.record()]).await?;
        tasks::recover(&gateway).await;
        tokio::spawn(relay_catalog_changes(Arc::downgrade(&gateway), changes));
        tokio::spawn(relay_resource_updates(Arc::downgrade(&gateway)));
        if let Some(refusals) = gateway.downstreams.take_refusals() {
            tokio::spawn(record_refusals(Arc::downgrade(&gateway), refusals));
        }
        Ok(gateway)
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The approval broker (the API, the CLI and the channels decide through it).
    pub fn approvals(&self) -> &Broker {
        &self.approvals
    }

    /// The policy set in force now. Load it once per call.
    pub fn policy(&self) -> Arc<ActivePolicy> {
        self.policy.borrow().clone()
    }

    /// The catalog clients are served now.
    pub fn catalog(&self) -> Arc<Vetted> {
        self.catalog.borrow().clone()
    }

    /// Returns once the catalog holds every downstream's first tool list, vetted; what
    /// needs the catalog (lists, calls, reads) awaits it. Refused when the gateway is
    /// stopping before it got there.
    pub async fn ready(&self) -> Result<(), ErrorData> {
        let mut ready = self.ready.subscribe();
        match ready.wait_for(|ready| *ready).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ErrorData::internal_error("the gateway stopped before its downstreams were ready", None)),
        }
    }

    /// Vets `catalog` (every tool's fingerprint against the accepted one) and publishes
    /// it; only then logs what changed, as one group, and stores the fingerprints seen.
    /// One at a time (start, `relay_catalog_changes`, [`Gateway::accept_tool`]).
    async fn refresh_catalog(&self, catalog: &Catalog) {
        let _one = self.vetting.lock().await;
        let previous = self.catalog();
        let vetting = vetting::vet(&self.fingerprints, &previous, catalog, self.new_tools);
        // From here on every call sees the new definitions with their checked risk.
        self.catalog.send_replace(Arc::new(vetting.catalog));
        self.schemas.clear();
        if !vetting.records.is_empty()
            && let Err(error) = self.audit.append_all(vetting.records).await
        {
            // Not stored either: the next refresh finds the same changes and logs them.
            tracing::error!(%error, "could not record the tool catalog's changes");
            return;
        }
        if let Err(error) = self.fingerprints.record(&vetting.observations).await {
            tracing::error!(%error, "could not store tool fingerprints");
        }
    }

    /// Accepts the last seen definition of `exposed` (`airlock tools accept` on a running
    /// gateway), then vets and publishes the catalog again, so the tool is served at its
    /// manifest risk at once, and tells legacy-era clients the list changed.
    pub async fn accept_tool(&self, exposed: &str) -> Result<String, fingerprints::FingerprintError> {
        let accepted = self.fingerprints.accept(exposed).await?;
        let catalog = self.downstreams.subscribe().borrow().clone();
        self.refresh_catalog(&catalog).await;
        self.notify_list_changed().await;
        Ok(accepted)
    }

    /// `notifications/tools/list_changed` to every legacy-era client still connected.
    async fn notify_list_changed(&self) {
        let peers: Vec<_> = self.listeners.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for peer in &peers {
            if let Err(error) = peer.notify_tool_list_changed().await {
                tracing::debug!(%error, "client gone; no list_changed for it");
            }
        }
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner).retain(|peer| !peer.is_transport_closed());
    }

    /// The downstream servers behind this gateway.
    pub fn downstreams(&self) -> &Arc<Downstreams> {
        &self.downstreams
    }

    /// Who callers are.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// A handler for one new client session. `caller` is fixed for stdio and legacy SSE;
    /// streamable HTTP sessions (`None`) take it from each request.
    pub fn session(self: &Arc<Self>, channel: Channel, caller: Option<Caller>) -> Session {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        let children = Arc::new(self.downstreams.session_children());
        let live = Arc::new(LiveSession::new(self.live_sessions.clone()));
        Session { gateway: self.clone(), id: format!("{}-s{n}", self.boot), channel, caller, children, _live: live }
    }

    /// How many sessions (of every channel) are alive now.
    pub fn live_sessions(&self) -> u64 {
        self.live_sessions.load(Ordering::Relaxed)
    }

    /// Call ids are unique across restarts: a per-start prefix and a counter.
    fn next_call_id(&self) -> String {
        format!("{}-c{}", self.boot, self.next_call.fetch_add(1, Ordering::Relaxed))
    }
}

impl Gateway {
    /// The tool as a client sees it: its risk in `_meta["airlock/risk"]` and in the first
    /// words of its description, so a model sees it too.
    fn present(&self, vetted: &VettedTool) -> Tool {
        let (risk, source) = vetted.risk();
        let mut tool = vetted.entry.exposed.clone();
        let description = tool.description.as_deref().unwrap_or("");
        tool.description = Some(format!("[airlock risk: {}] {description}", risk.as_str()).trim_end().to_owned().into());
        let meta = tool.meta.get_or_insert_with(Default::default);
        meta.0.insert("airlock/risk".to_owned(), serde_json::Value::from(risk.as_str()));
        meta.0.insert("airlock/risk_source".to_owned(), serde_json::Value::from(source.describe()));
        tool
    }
}

/// Passes `notifications/resources/updated` on to the sessions subscribed to that URI
/// (only they learn it; a URI may carry a token).
async fn relay_resource_updates(gateway: std::sync::Weak<Gateway>) {
    let Some(mut updates) = gateway.upgrade().map(|g| g.downstreams.resource_updates()) else { return };
    while let Ok(update) = updates.recv().await {
        let Some(gateway) = gateway.upgrade() else { return };
        let peers = gateway.subscribers.of(&update.uri);
        for peer in peers {
            let _ = peer.notify_resource_updated(update.clone()).await;
        }
    }
}

/// Logs `upstream_request_refused` for every downstream request no session could own:
/// the server, the method and the sessions that had calls in flight (never the request's
/// content, which may ask for a secret).
async fn record_refusals(
    gateway: std::sync::Weak<Gateway>,
    mut refusals: tokio::sync::mpsc::UnboundedReceiver<crate::downstream::UpstreamRefusal>,
) {
    while let Some(refusal) = refusals.recv().await {
        let Some(gateway) = gateway.upgrade() else { return };
        let sessions: Vec<&str> = refusal.sessions.iter().map(|s| s.as_str()).collect();
        let record = Record::new(RecordKind::UpstreamRequestRefused).detail(serde_json::json!({
            "server": refusal.server,
            "method": refusal.method,
            "sessions": sessions,
            "reason": "calls of several sessions were in flight and the request named none of them",
        }));
        if let Err(error) = gateway.audit.append(record).await {
            tracing::error!(%error, "could not record upstream_request_refused");
        }
    }
}

/// Once the downstreams are ready, vets their catalog and opens the gateway; then tells
/// every legacy-era client that the tool list changed, whenever it does.
async fn relay_catalog_changes(
    gateway: std::sync::Weak<Gateway>,
    mut changes: tokio::sync::watch::Receiver<Arc<Catalog>>,
) {
    let Some(downstreams) = gateway.upgrade().map(|g| g.downstreams.clone()) else { return };
    downstreams.ready().await;
    drop(downstreams);
    {
        let Some(gateway) = gateway.upgrade() else { return };
        // The changes seen so far are all in this one vetting.
        let catalog = changes.borrow_and_update().clone();
        gateway.refresh_catalog(&catalog).await;
        gateway.ready.send_replace(true);
    }
    while changes.changed().await.is_ok() {
        let Some(gateway) = gateway.upgrade() else { return };
        let catalog = changes.borrow_and_update().clone();
        gateway.refresh_catalog(&catalog).await;
        gateway.notify_list_changed().await;
    }
}

/// One client session: the `ServerHandler` rmcp drives.
#[derive(Clone)]
pub struct Session {
    gateway: Arc<Gateway>,
    id: String,
    channel: Channel,
    caller: Option<Caller>,
    /// This session's own connections to `scope = "session"` servers; they stop when the
    /// last clone of the session (rmcp's handler) is dropped.
    children: Arc<crate::downstream::SessionChildren>,
    /// Counts this session in [`Gateway::live_sessions`] until its last clone is dropped.
    _live: Arc<LiveSession>,
}

/// One count in [`Gateway::live_sessions`], taken back on drop.
struct LiveSession(Arc<AtomicU64>);

impl LiveSession {
    fn new(count: Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Session {
    /// The caller of this request: the session's own, or the one the HTTP layer
    /// authenticated for this request. No caller → refused (fail closed).
    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        if let Some(caller) = &self.caller {
            return Ok(caller.clone());
        }
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| ErrorData::invalid_request("request carries no authenticated caller", None))
    }
}

impl ServerHandler for Session {
    fn get_info(&self) -> ServerConfig {
        let capabilities =
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_logging()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_tasks()
                .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Airlock gateway: tools from several servers, named <server>__<tool>. \
                 Risky calls may be held for human approval.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.gateway.ready().await?;
        let catalog = self.gateway.catalog();
        let tools = catalog.tools().map(|tool| self.gateway.present(tool)).collect();
        // In exposed-name order, with the hints of the downstreams' own lists.
        let mut list = ListToolsResult::with_all_items(tools);
        (list.ttl_ms, list.cache_scope) = self.gateway.downstreams.tools_freshness();
        Ok(list)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.gateway.ready().await?;
        let call_id = self.gateway.next_call_id();
        // Field names after the OpenTelemetry MCP/GenAI conventions where they have one.
        let span = tracing::info_span!(
            "call",
            call_id = %call_id,
            session = %self.id,
            principal = tracing::field::Empty,
            tool = %request.name,
            otel.name = "tools/call",
            otel.kind = "server",
            "mcp.method.name" = "tools/call",
            "gen_ai.operation.name" = "execute_tool",
            "gen_ai.tool.name" = tracing::field::Empty,
            "airlock.server" = tracing::field::Empty,
            "airlock.risk" = tracing::field::Empty,
            "airlock.decision" = tracing::field::Empty,
            "airlock.approval.id" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, &context.meta.0.0);
        forward::run(self, &call_id, request, context).instrument(span).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, ErrorData> {
        self.gateway.ready().await?;
        self.gateway.list_prompts().await
    }

    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, ErrorData> {
        self.gateway.ready().await?;
        self.prompt(request, &context).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        self.gateway.ready().await?;
        self.gateway.list_resources().await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, ErrorData> {
        self.gateway.ready().await?;
        self.gateway.list_resource_templates().await
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, ErrorData> {
        self.gateway.ready().await?;
        self.read(request, &context).await
    }

    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.gateway.ready().await?;
        self.subscribe_to(request, &context).await
    }

    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.unsubscribe_from(request).await
    }

    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.gateway.downstreams.set_level(request).await;
        Ok(())
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        self.get_task_of(&request, &context)
    }

    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.update_task_of(&request, &context).await
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.cancel_task_of(&request, &context).await
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        tracing::debug!(session = %self.id, channel = ?self.channel, "client initialized");
        let caller = self.caller.clone().or_else(|| {
            context.extensions.get::<http::request::Parts>().and_then(|parts| parts.extensions.get::<Caller>()).cloned()
        });
        let client = context.peer.peer_info().map(|info| info.client_info.clone());
        let mut record = Record::new(RecordKind::SessionOpened).session(self.id.as_str()).detail(serde_json::json!({
            "channel": format!("{:?}", self.channel),
            "client": client.as_ref().map(|c| format!("{} {}", c.name, c.version)),
            "protocol": context.peer.peer_info().map(|info| info.protocol_version.to_string()),
            // Links this session to `session_refused` records, which name the HTTP id.
            "mcp_session": context.extensions.get::<http::request::Parts>()
                .and_then(|parts| parts.headers.get("mcp-session-id"))
                .and_then(|id| id.to_str().ok()),
        }));
        if let Some(caller) = caller {
            record = record.principal(caller.principal.as_str());
        }
        if let Err(error) = self.gateway.audit.append(record).await {
            tracing::error!(%error, "could not record session_opened");
        }
        self.gateway.listeners.lock().unwrap_or_else(PoisonError::into_inner).push(context.peer);
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        // The vetted catalog: a client told of a change lists the checked definitions.
        let mut changes = self.gateway.catalog.subscribe();
        changes.mark_unchanged();
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() { return Ok(()) }
                    if context.accepted().tools_list_changed == Some(true)
                        && context.sink().notify_tool_list_changed().await.is_err()
                    {
                        return Ok(());
                    }
                }
                () = context.cancelled() => return Ok(()),
            }
        }
    }
}
