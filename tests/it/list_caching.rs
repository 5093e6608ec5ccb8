//! `ttlMs` / `cacheScope` (SEP-2549) of the lists Airlock aggregates, through the real
//! binary: downstreams (real rmcp servers over streamable HTTP) each say how long their
//! `tools/list`, `resources/list` and `resources/templates/list` stay fresh and who may
//! cache them; a client of the gateway gets the shortest TTL, `private` when any part is,
//! 0 when a part promised nothing, and the safe defaults when no part gave any. A downstream whose
//! promised freshness ran out is asked for its list again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rmcp::model::{
    CacheScope, ErrorData, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    Resource, ResourceTemplate, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::headers::post;
use crate::util::{ALLOW_ALL, Setup, eventually};

/// A downstream whose lists carry the given hints; counts its `tools/list` requests.
#[derive(Clone)]
struct Hinting {
    name: &'static str,
    ttl_ms: Option<u64>,
    scope: Option<CacheScope>,
    tool_lists: Arc<AtomicU32>,
}

impl Hinting {
    fn new(name: &'static str, ttl_ms: Option<u64>, scope: Option<CacheScope>) -> Self {
        Self { name, ttl_ms, scope, tool_lists: Arc::default() }
    }
}

impl ServerHandler for Hinting {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
    }

    async fn list_tools(&self, _: Option<PaginatedRequestParams>, _: RequestContext<RoleServer>) -> Result<ListToolsResult, ErrorData> {
        self.tool_lists.fetch_add(1, Ordering::SeqCst);
        let Value::Object(schema) = json!({"type": "object"}) else { unreachable!("an object literal") };
        let mut list = ListToolsResult::with_all_items(vec![Tool::new(format!("{}_tool", self.name), "a tool", Arc::new(schema))]);
        (list.ttl_ms, list.cache_scope) = (self.ttl_ms, self.scope);
        Ok(list)
    }

    async fn list_resources(&self, _: Option<PaginatedRequestParams>, _: RequestContext<RoleServer>) -> Result<ListResourcesResult, ErrorData> {
        let mut list = ListResourcesResult::with_all_items(vec![Resource::new(format!("{}://doc", self.name), "doc")]);
        (list.ttl_ms, list.cache_scope) = (self.ttl_ms, self.scope);
        Ok(list)
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let mut list = ListResourceTemplatesResult::with_all_items(vec![ResourceTemplate::new(format!("{}://docs/{{id}}", self.name), "docs")]);
        (list.ttl_ms, list.cache_scope) = (self.ttl_ms, self.scope);
        Ok(list)
    }
}

/// Serves `server` over streamable HTTP on a free port; returns its `/mcp` URL.
async fn serve(server: Hinting) -> String {
    crate::util::serve_http(server).await
}

/// A gateway in front of `servers`.
async fn gateway_for(servers: &[Hinting]) -> (Setup, crate::util::HttpGateway) {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n");
    for server in servers {
        let url = serve(server.clone()).await;
        setup.manifest(server.name, &format!("name = \"{name}\"\nurl = \"{url}\"\ndefault_risk = \"low\"\n", name = server.name));
    }
    setup.policy("allow-all", ALLOW_ALL);
    let gateway = setup.http().await;
    (setup, gateway)
}

/// `(ttlMs, cacheScope)` of each aggregated list, as a 2026-07-28 client gets them.
async fn hints(gateway: &crate::util::HttpGateway) -> Vec<(Value, Value)> {
    let mut found = Vec::new();
    for method in ["tools/list", "resources/list", "resources/templates/list"] {
        let (status, body) = post(gateway, &[("mcp-method", method)], method, json!({})).await;
        assert_eq!(status, 200, "{method}: {body}");
        found.push((body["result"]["ttlMs"].clone(), body["result"]["cacheScope"].clone()));
    }
    found
}

#[tokio::test]
async fn an_aggregated_list_has_the_shortest_ttl_and_is_private_when_any_part_is() {
    let long = Hinting::new("long", Some(3_600_000), Some(CacheScope::Public));
    let short = Hinting::new("short", Some(1_800_000), Some(CacheScope::Private));
    let (_setup, gateway) = gateway_for(&[long, short]).await;
    let (status, body) = post(&gateway, &[("mcp-method", "tools/list")], "tools/list", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["result"]["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["long__long_tool", "short__short_tool"], "both parts, in name order");
    for (ttl, scope) in hints(&gateway).await {
        // What is left of the shorter TTL: never more than it, never the longer one.
        let ttl = ttl.as_u64().expect("ttlMs");
        assert!(ttl > 0 && ttl <= 1_800_000, "{ttl}");
        assert_eq!(scope, "private");
    }
}

#[tokio::test]
async fn a_part_that_promised_nothing_makes_the_list_uncacheable() {
    let public = Hinting::new("pub", Some(3_600_000), Some(CacheScope::Public));
    let (_setup, gateway) = gateway_for(std::slice::from_ref(&public)).await;
    for (ttl, scope) in hints(&gateway).await {
        let ttl = ttl.as_u64().expect("ttlMs");
        assert!(ttl > 1_800_000 && ttl <= 3_600_000, "one part: its own TTL, less the time since: {ttl}");
        assert_eq!(scope, "public");
    }
    drop(gateway);

    // With a legacy part (no hints), the gateway cannot promise any freshness.
    let untimed = Hinting::new("untimed", None, None);
    let (_setup, gateway) = gateway_for(&[public, untimed.clone()]).await;
    for (ttl, scope) in hints(&gateway).await {
        assert_eq!((ttl, scope), (json!(0), json!("public")));
    }
    drop(gateway);

    // No part gave hints: Airlock adds none, and a 2026-07-28 client (for which the
    // fields are required) gets the safe defaults: stale at once, private.
    let (_setup, gateway) = gateway_for(&[untimed]).await;
    for (ttl, scope) in hints(&gateway).await {
        assert_eq!((ttl, scope), (json!(0), json!("private")));
    }
}

#[tokio::test]
async fn a_downstream_whose_freshness_ran_out_is_listed_again() {
    let brief = Hinting::new("brief", Some(1), Some(CacheScope::Public));
    let lists = brief.tool_lists.clone();
    let (_setup, gateway) = gateway_for(&[brief]).await;
    // `tools/list` waits for the catalog, which lists every downstream once at start.
    let (status, body) = post(&gateway, &[("mcp-method", "tools/list")], "tools/list", json!({})).await;
    let first = lists.load(Ordering::SeqCst);
    assert!(first >= 1, "listed at start");
    assert_eq!(status, 200, "{body}");
    // The hang guard is not a timing assertion: the refresh runs in the background.
    assert!(eventually(Duration::from_secs(30), || lists.load(Ordering::SeqCst) > first).await, "listed again");
}
