//! Traces: the OTLP/HTTP exporter, the stage spans of the call pipeline, and W3C trace
//! context carried in MCP `_meta` (SEP-414: `traceparent`, `tracestate`).
//!
//! Span attributes follow the OpenTelemetry semantic conventions for MCP and GenAI where
//! they define one (`mcp.method.name`, `mcp.session.id`, `gen_ai.operation.name`,
//! `gen_ai.tool.name`, `error.type`); Airlock's own are under `airlock.*`.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::{Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TelemetryError;

/// Target of the `call` span (`gateway::Session::call_tool`).
pub(crate) const CALL_TARGET: &str = "airlock::gateway";
/// Target of the stage spans. They are `debug`: with telemetry off no layer enables them,
/// so their callsites are disabled and cost a relaxed load.
pub(crate) const STAGE_TARGET: &str = "airlock::stage";

/// Set once an exporter is installed; propagation does nothing before.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The spans exported: the call span and its stage children (not rmcp's or the HTTP stack's).
pub(super) fn wanted(meta: &Metadata<'_>) -> bool {
    meta.is_span() && (meta.target() == STAGE_TARGET || (meta.target() == CALL_TARGET && meta.name() == "call"))
}

/// `endpoint` as the traces URL: a base URL (path `/`) gets the OTLP `/v1/traces`.
fn traces_url(endpoint: &url::Url) -> String {
    if endpoint.path() == "/" {
        format!("{}v1/traces", endpoint.as_str())
    } else {
        endpoint.as_str().to_owned()
    }
}

/// The tracer provider: OTLP/HTTP protobuf with a batch processor (its own thread), and a
/// parent-based sampler keeping `ratio` of new traces.
pub(super) fn provider(endpoint: &url::Url, service_name: &str, ratio: f64) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .build()
        .map_err(|e| TelemetryError::Exporter { endpoint: url, why: e.to_string() })?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_owned()).build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(resource)
        .build();
    EXPORTING.store(true, Ordering::Release);
    Ok(provider)
}

/// A stage of the call pipeline, each a child span of the call (and a latency histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Argument validation against the tool's input schema.
    Validate,
    /// Risk and policy (and rate limits).
    Decide,
    /// Waiting until the call's records are durable.
    AuditCommit,
    /// Waiting for a person (confirm or approve).
    Hold,
}

/// The span of one stage; enter it (`in_scope`) or `instrument` the stage's future with it.
pub fn stage(stage: Stage) -> Span {
    match stage {
        Stage::Validate => tracing::debug_span!(target: "airlock::stage", "validate"),
        Stage::Decide => tracing::debug_span!(target: "airlock::stage", "decide"),
        Stage::AuditCommit => tracing::debug_span!(target: "airlock::stage", "audit_commit"),
        Stage::Hold => tracing::debug_span!(target: "airlock::stage", "hold", "airlock.approval.id" = tracing::field::Empty),
    }
}

/// The client span of the request to the downstream server; also a stage (`downstream`).
pub fn downstream(server: &str, tool: &str) -> Span {
    tracing::debug_span!(
        target: "airlock::stage",
        "downstream",
        otel.name = format!("tools/call {tool}"),
        otel.kind = "client",
        "mcp.method.name" = "tools/call",
        "gen_ai.tool.name" = tool,
        "airlock.server" = server,
    )
}

/// The call span learned which catalog tool it is for: its server and exposed name (the
/// only tool names that reach span names and metric labels).
pub fn resolved(call: &Span, server: &str, tool: &str) {
    call.record("airlock.server", server);
    call.record("gen_ai.tool.name", tool);
    if EXPORTING.load(Ordering::Acquire) {
        // Once the OpenTelemetry span exists (a client's `traceparent` made it), a recorded
        // `otel.name` no longer renames it; rename it directly.
        opentelemetry::trace::TraceContextExt::span(&call.context()).update_name(format!("tools/call {tool}"));
    }
}

struct MetaCarrier<'a>(&'a Map<String, Value>);

impl Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetaInjector<'a>(&'a mut Map<String, Value>);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

/// Makes `call` continue the client's trace when the request's `_meta` carries a valid
/// `traceparent`. Does nothing while traces are off.
pub fn continue_trace(call: &Span, meta: &Map<String, Value>) {
    if !EXPORTING.load(Ordering::Acquire) || !meta.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&MetaCarrier(meta));
    if let Err(error) = call.set_parent(parent) {
        tracing::debug!(%error, "could not continue the client's trace");
    }
}

/// Writes `downstream`'s trace context into the `_meta` sent downstream, replacing the
/// client's (the downstream's parent is our request span). Does nothing while traces are off.
pub fn inject_downstream(downstream: &Span, meta: &mut Map<String, Value>) {
    if !EXPORTING.load(Ordering::Acquire) {
        return;
    }
    let context = downstream.context();
    meta.remove("tracestate");
    TraceContextPropagator::new().inject_context(&context, &mut MetaInjector(meta));
}
