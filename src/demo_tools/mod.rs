//! `airlock demo-tools`: a built-in downstream MCP server with realistic operations tools
//! that act on a sandbox folder, for the quickstart, the demo and the tests.
//!
//! Owns: the demo server (`DemoTools`, its `ServerHandler`), its tools, resources and prompt,
//! the sandbox layout, and receipt capture (`_meta["airlock/approval"]` → `receipts.jsonl`).
//! Uses: rmcp (server side, stdio transport), `sandbox` for every file effect.
//! Must not: depend on any other Airlock module (it is a stand-in for a third-party server),
//! write outside its sandbox, or print to stdout (stdout is the MCP protocol).
//!
//! # Tools (name → arguments)
//! | tool | arguments | annotations (readOnly / destructive / idempotent / openWorld) |
//! |---|---|---|
//! | `read_customer` | `{id: string}` | true / false / true / false |
//! | `search_logs` | `{query: string, limit?: integer}` | true / false / true / false |
//! | `export_customers` | `{destination: string, format?: "json" \| "csv"}` | false / false / true / true |
//! | `grant_role` | `{user: string, role: string}` | false / false / false / false |
//! | `delete_bucket` | `{bucket: string}` | false / true / true / false |
//! | `restart_service` | `{service: string}` | false / false / false / false |
//! | `run_migration` | `{steps: integer}` (1..=1000) | false / true / false / false |
//! | `rotate_credentials` | `{service: string}` | false / true / false / true |
//! | `echo` | `{text: string}` | true / false / true / false |
//! | `content_gallery` | `{}` | true / false / true / false |
//! | `fail` | `{message: string}` | true / false / true / false |
//! | `sleep` | `{ms: integer}` | true / false / true / false |
//! | `crash` | `{}` | false / true / true / false |
//! | `add_tool` | `{name: string, description?: string}` | false / false / true / false |
//! | `set_description` | `{tool: string, description: string}` | false / false / true / false |
//! | `change_tools` | `{set?: {name: {field: value}}, remove?: [name], notifications?: integer}` | false / false / true / false |
//!
//! `change_tools` replaces the named fields (`title`, `description`, `inputSchema`,
//! `outputSchema`, `annotations`, `icons`, `_meta`) of the tools `tools/list` serves (a
//! name not served yet is added), stops listing the `remove`d ones (their calls still run,
//! as a dishonest server's would), sends `notifications` list changes (default 1), and
//! answers `{"tools_list_served": n}`: the `tools/list` requests served before it.
//!
//! Tools added by `add_tool` take `{text?: string}`, are read-only, and answer
//! `called <name>` plus the text.
//!
//! # Sandbox layout
//! | path | written by |
//! |---|---|
//! | `.seeded` | first start; seeding happens once, so deletions survive restarts |
//! | `customers.json` | seed (C-1001 … C-1004); read by `read_customer`, `export_customers` |
//! | `logs/{api,auth,billing}.log` | seed; read by `search_logs` |
//! | `buckets/<name>/README.txt` | seed (`prod-customers`, `staging-assets`, `tmp-scratch`); removed by `delete_bucket` |
//! | `exports/<destination>` | `export_customers` |
//! | `roles.json` | seed (one grant); `grant_role` appends `{user, role, granted_at}` |
//! | `restarts.log` | `restart_service`, one JSON line `{service, at}` |
//! | `migrations.log` | `run_migration`, one JSON line `{steps, at}` |
//! | `credentials.log` | `rotate_credentials` on a confirmed rotation, `{service, version, at}` |
//! | `cancelled/<request-id>.json` | `sleep` when its call is cancelled |
//! | `receipts.jsonl` | any call carrying `_meta["airlock/approval"]`: the value, one line |

mod gallery;
mod prompts;
pub mod sandbox;
mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, SubscriptionContext, SubscriptionSink};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

pub use sandbox::{Sandbox, SandboxError};

/// The `_meta` key under which Airlock forwards an approval receipt.
pub const APPROVAL_META_KEY: &str = "airlock/approval";

/// Sandbox used when `airlock demo-tools` is started without `--sandbox`.
pub const DEFAULT_SANDBOX: &str = "airlock-data/sandbox";

/// Errors that stop the demo server.
#[derive(Debug, thiserror::Error)]
pub enum DemoToolsError {
    /// The sandbox could not be created or seeded.
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    /// The MCP session could not start (e.g. the client never sent `initialize`).
    #[error("could not start the MCP session: {0}")]
    Start(String),
    /// The MCP session ended with an error.
    #[error("MCP session failed: {0}")]
    Session(String),
}

/// Serves the demo tools over stdio until the client disconnects.
pub async fn serve_stdio(sandbox: &Path) -> Result<(), DemoToolsError> {
    let server = DemoTools::open(sandbox)?;
    tracing::debug!(sandbox = %sandbox.display(), "demo tools ready on stdio");
    let running = server
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|err| DemoToolsError::Start(err.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|err| DemoToolsError::Session(err.to_string()))?;
    Ok(())
}

/// The demo tool server. Cheap to clone; clones share the sandbox and catalog.
#[derive(Clone)]
pub struct DemoTools {
    inner: Arc<Inner>,
}

struct Inner {
    sandbox: Sandbox,
    router: ToolRouter<DemoTools>,
    catalog: Mutex<Catalog>,
    /// `tools/list` requests served.
    lists_served: AtomicU64,
}

/// What changes while the server runs: description overrides, added tools, and the
/// 2026-07-28 `subscriptions/listen` streams that want `tools/list_changed`.
#[derive(Default)]
struct Catalog {
    descriptions: BTreeMap<String, String>,
    added: BTreeMap<String, Tool>,
    /// Fields `change_tools` replaced, per tool.
    redefined: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// Tools `change_tools` stopped listing.
    unlisted: BTreeSet<String>,
    listeners: Vec<SubscriptionSink>,
    /// Legacy `resources/subscribe` clients, by URI.
    subscribed: Vec<(String, rmcp::Peer<RoleServer>)>,
}

impl DemoTools {
    /// Opens (and on first use seeds) the sandbox at `root`.
    pub fn open(root: &Path) -> Result<Self, DemoToolsError> {
        let sandbox = Sandbox::open(root)?;
        Ok(Self {
            inner: Arc::new(Inner {
                sandbox,
                router: Self::static_router(),
                catalog: Mutex::new(Catalog::default()),
                lists_served: AtomicU64::new(0),
            }),
        })
    }

    /// Sends `notifications/resources/updated` for `uri` to every client subscribed to it.
    async fn resource_changed(&self, uri: &str) {
        let peers: Vec<_> = self.catalog().subscribed.iter().filter(|(u, _)| u == uri).map(|(_, p)| p.clone()).collect();
        for peer in peers {
            let _ = peer.notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(uri)).await;
        }
    }

    /// The sandbox folder this server acts on.
    pub fn sandbox_root(&self) -> PathBuf {
        self.inner.sandbox.root().to_path_buf()
    }

    fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        // A poisoned lock only means a panic elsewhere; the maps are still consistent.
        self.inner.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every tool as `tools/list` serves it now, sorted by name.
    pub fn current_tools(&self) -> Vec<Tool> {
        let catalog = self.catalog();
        let mut tools = self.inner.router.list_all();
        tools.extend(catalog.added.values().cloned());
        for tool in &mut tools {
            if let Some(description) = catalog.descriptions.get(tool.name.as_ref()) {
                tool.description = Some(description.clone().into());
            }
            if let Some(fields) = catalog.redefined.get(tool.name.as_ref()) {
                *tool = redefined(tool, fields);
            }
        }
        tools.retain(|tool| !catalog.unlisted.contains(tool.name.as_ref()));
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    fn tools_list_served(&self) -> u64 {
        self.inner.lists_served.load(Ordering::Relaxed)
    }

    /// `change_tools`: checks every field first, so a bad request changes nothing.
    fn change_catalog(
        &self,
        set: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
        remove: Vec<String>,
    ) -> Result<(), String> {
        const FIELDS: [&str; 7] = ["title", "description", "inputSchema", "outputSchema", "annotations", "icons", "_meta"];
        for (name, fields) in &set {
            if let Some(field) = fields.keys().find(|f| !FIELDS.contains(&f.as_str())) {
                return Err(format!("{name}: field {field:?} cannot be changed (use one of {FIELDS:?})"));
            }
            let probe = Tool::new(name.clone(), "", Arc::new(serde_json::Map::new()));
            let mut value = serde_json::to_value(&probe).map_err(|e| e.to_string())?;
            if let Some(object) = value.as_object_mut() {
                object.extend(fields.clone());
            }
            serde_json::from_value::<Tool>(value).map_err(|e| format!("{name}: {e}"))?;
        }
        for (name, fields) in set {
            if !self.has_tool(&name) {
                self.add_dynamic_tool(&name, None)?;
            }
            let mut catalog = self.catalog();
            catalog.unlisted.remove(&name);
            catalog.redefined.entry(name).or_default().extend(fields);
        }
        self.catalog().unlisted.extend(remove);
        Ok(())
    }

    fn has_tool(&self, name: &str) -> bool {
        self.inner.router.has_route(name) || self.catalog().added.contains_key(name)
    }

    fn add_dynamic_tool(&self, name: &str, description: Option<String>) -> Result<(), String> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(format!(
                "invalid tool name {name:?}: use 1-64 of a-z, A-Z, 0-9, '_', '-', '.'"
            ));
        }
        if self.has_tool(name) {
            return Err(format!("tool {name:?} already exists"));
        }
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "Any text."}},
        });
        let schema = match schema {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let description = description.unwrap_or_else(|| format!("Tool {name}, added at run time."));
        let tool = Tool::new(name.to_string(), description, Arc::new(schema)).with_annotations(
            ToolAnnotations::with_title(name.to_string())
                .read_only(true)
                .destructive(false)
                .idempotent(true)
                .open_world(false),
        );
        self.catalog().added.insert(name.to_string(), tool);
        Ok(())
    }

    fn override_description(&self, tool: &str, description: String) -> Result<(), String> {
        if !self.has_tool(tool) {
            return Err(format!("no such tool: {tool:?}"));
        }
        self.catalog()
            .descriptions
            .insert(tool.to_string(), description);
        Ok(())
    }

    /// Tells the client the tool list changed: on the legacy session for 2025-era peers,
    /// and on every open `subscriptions/listen` stream for 2026-07-28 peers.
    async fn announce_list_changed(&self, context: &RequestContext<RoleServer>) {
        let listeners = self.catalog().listeners.clone();
        for sink in listeners {
            if let Err(err) = sink.notify_tool_list_changed().await {
                tracing::debug!(%err, "listen stream gone");
            }
        }
        let modern = context
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
        if !modern && let Err(err) = context.peer.notify_tool_list_changed().await {
            tracing::warn!(%err, "could not send tools/list_changed");
        }
    }

    /// Appends an approval receipt to the sandbox when the call carries one.
    fn capture_receipt(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) {
        // rmcp moves a request's `_meta` into the context; look in the params too in case
        // the handler is driven directly.
        let receipt = context
            .meta
            .get(APPROVAL_META_KEY)
            .or_else(|| request.meta.as_ref().and_then(|m| m.get(APPROVAL_META_KEY)));
        if let Some(receipt) = receipt
            && let Err(err) = self.sandbox().record_receipt(receipt)
        {
            tracing::warn!(%err, "could not record approval receipt");
        }
    }
}

impl ServerHandler for DemoTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new(
            "airlock-demo-tools",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Operations tools acting on a sandbox folder: customers, logs, buckets, roles, \
             services. Some are destructive; Airlock decides which calls need approval.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.inner.lists_served.fetch_add(1, Ordering::Relaxed);
        Ok(ListToolsResult::with_all_items(self.current_tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.current_tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.capture_receipt(&request, &context);
        let added = self.catalog().added.contains_key(request.name.as_ref());
        if added {
            let text = request
                .arguments
                .as_ref()
                .and_then(|a| a.get("text"))
                .and_then(|t| t.as_str())
                .unwrap_or("");
            let result = CallToolResult::success(vec![ContentBlock::text(format!(
                "called {} {text}",
                request.name
            ))]);
            return Ok(result.into());
        }
        let call = ToolCallContext::new(self, request, context);
        self.inner.router.call(call).await
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let wants_tools = context.accepted().tools_list_changed == Some(true);
        let id = context.sink().id().clone();
        if wants_tools {
            self.catalog().listeners.push(context.sink().clone());
        }
        context.cancelled().await;
        self.catalog().listeners.retain(|sink| sink.id() != &id);
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(prompts::resources()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        prompts::read_resource(self.sandbox(), &request.uri).map(ReadResourceResponse::from)
    }

    #[allow(deprecated)] // resources/subscribe is legacy-only
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if !prompts::resources().iter().any(|r| r.uri == request.uri) {
            return Err(ErrorData::resource_not_found(format!("no such resource: {}", request.uri), None));
        }
        self.catalog().subscribed.push((request.uri, context.peer));
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.catalog().subscribed.retain(|(uri, _)| *uri != request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(prompts::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        prompts::get_prompt(&request).map(GetPromptResponse::from)
    }
}

/// `tool` with `fields` replaced (checked by `change_catalog`; a field that no longer
/// parses leaves the tool as it was).
fn redefined(tool: &Tool, fields: &serde_json::Map<String, serde_json::Value>) -> Tool {
    let Ok(mut value) = serde_json::to_value(tool) else { return tool.clone() };
    if let Some(object) = value.as_object_mut() {
        object.extend(fields.clone());
    }
    serde_json::from_value(value).unwrap_or_else(|_| tool.clone())
}
