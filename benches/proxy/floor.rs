//! The HTTP floor: a minimal rmcp server with one `echo` tool behind the same streamable-HTTP
//! stack Airlock uses (`StreamableHttpService` with Airlock's config, served by
//! `airlock::http::serve`, i.e. with `TCP_NODELAY`). It shows what rmcp's HTTP transport
//! costs on its own, so the Airlock HTTP row can be read as "transport + proxy".
//!
//! Owns: the echo server, run when the bench binary is re-executed with `BENCH_ROLE=echo-http`.
//! Uses: rmcp's server side; `airlock::http::serve` for the listener.
//! Must not: listen anywhere but 127.0.0.1.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The environment variable that turns the bench binary into the floor server.
pub(crate) const ROLE: &str = "BENCH_ROLE";
pub(crate) const ROLE_ECHO_HTTP: &str = "echo-http";
pub(crate) const PORT: &str = "BENCH_PORT";

#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]});
        let schema = schema.as_object().cloned().unwrap_or_default();
        Ok(ListToolsResult::with_all_items(vec![Tool::new("echo", "Echo the text back.", schema)]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = request.arguments.as_ref().and_then(|a| a.get("text")).and_then(|t| t.as_str()).unwrap_or("");
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![ContentBlock::text(text.to_owned())])))
    }
}

/// Serves the echo tool at `http://127.0.0.1:$BENCH_PORT/mcp` until killed.
pub(crate) async fn serve_echo_http() -> anyhow::Result<()> {
    let port: u16 = std::env::var(PORT)?.parse()?;
    let shutdown = CancellationToken::new();
    // Same settings as Airlock's /mcp (src/http/mod.rs).
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_cancellation_token(shutdown.clone());
    let service = StreamableHttpService::new(|| Ok(Echo), Arc::new(LocalSessionManager::default()), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // The floor measures rmcp's transport, not Airlock's caps: room for every bench client.
    let limits = airlock::config::HttpLimits {
        max_connections: 4096,
        max_connections_per_address: 4096,
        ..airlock::config::HttpLimits::default()
    };
    airlock::http::serve(listener, router, limits, shutdown).await?;
    Ok(())
}
