//! Every metric Airlock exports: name, help, unit and labels in one place, and the hooks
//! the rest of the gateway calls (each a no-op until [`enable`] ran).
//!
//! Label values are closed sets (decision, risk, stage, hold kind and state, channel,
//! reason) or names from the gateway's own configuration and catalog (server, exposed
//! tool name, `unknown` for anything else): never a principal, an argument or a string a
//! client sent.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `airlock_calls_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CallLabels {
    pub(super) server: String,
    pub(super) tool: String,
    pub(super) decision: String,
    pub(super) risk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DecisionLabel {
    pub(super) decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StageLabel {
    pub(super) stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HoldLabels {
    kind: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChatLabels {
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a request was turned away before it reached the pipeline (or by validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No or a wrong credential.
    Auth,
    /// The `Host` or `Origin` guard.
    HostOrigin,
    /// Not JSON-RPC, or over the size limit.
    Malformed,
    /// Arguments that fail the tool's input schema.
    Schema,
}

impl Rejected {
    fn as_str(self) -> &'static str {
        match self {
            Rejected::Auth => "auth",
            Rejected::HostOrigin => "host_origin",
            Rejected::Malformed => "malformed",
            Rejected::Schema => "schema",
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 50 µs to about 100 s: a call held for a person can take minutes, an
/// allowed one a fraction of a millisecond.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.5, 16))
}

/// Seconds from 1 s to about 4 h: time until someone decides a hold.
fn decision_time() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

pub(super) struct Metrics {
    registry: Registry,
    pub(super) calls: Family<CallLabels, Counter>,
    pub(super) call_seconds: HistogramFamily<DecisionLabel>,
    pub(super) stage_seconds: HistogramFamily<StageLabel>,
    audit_group_size: Histogram,
    audit_commit_seconds: Histogram,
    audit_records: Counter,
    audit_commit_failures: Counter,
    holds_opened: Family<KindLabel, Counter>,
    holds_settled: Family<HoldLabels, Counter>,
    holds_open: Family<KindLabel, Gauge>,
    hold_decision_seconds: HistogramFamily<HoldLabels>,
    chat_posts: Family<ChatLabels, Counter>,
    downstream_up: Family<ServerLabel, Gauge>,
    downstream_restarts: Family<ServerLabel, Counter>,
    http_sessions: Gauge,
    rejected: Family<ReasonLabel, Counter>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The registry, once metrics are on.
pub(super) fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Turns metrics on for this process: builds the registry and subscribes to the audit
/// log's group commits.
pub(super) fn enable() {
    if METRICS.set(Metrics::new()).is_ok() {
        crate::audit::observe_commits(Box::new(|commit| {
            if let Some(m) = get() {
                m.audit_group_size.observe(commit.records as f64);
                m.audit_commit_seconds.observe(commit.elapsed.as_secs_f64());
                if commit.ok {
                    m.audit_records.inc_by(commit.records as u64);
                } else {
                    m.audit_commit_failures.inc();
                }
            }
        }));
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("airlock"),
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(latency),
            stage_seconds: Family::new_with_constructor(latency),
            audit_group_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            audit_commit_seconds: latency(),
            audit_records: Counter::default(),
            audit_commit_failures: Counter::default(),
            holds_opened: Family::default(),
            holds_settled: Family::default(),
            holds_open: Family::default(),
            hold_decision_seconds: Family::new_with_constructor(decision_time),
            chat_posts: Family::default(),
            downstream_up: Family::default(),
            downstream_restarts: Family::default(),
            http_sessions: Gauge::default(),
            rejected: Family::default(),
        };
        let r = &mut m.registry;
        r.register("calls", "tools/call requests by server, exposed tool, decision and risk", m.calls.clone());
        r.register_with_unit("call_duration", "Whole tools/call latency by decision", Unit::Seconds, m.call_seconds.clone());
        r.register_with_unit(
            "stage_duration",
            "Latency of each pipeline stage (validate, decide, audit_commit, hold, downstream)",
            Unit::Seconds,
            m.stage_seconds.clone(),
        );
        r.register("audit_group_size", "Records per audit group commit (one fsync each)", m.audit_group_size.clone());
        r.register_with_unit("audit_commit_duration", "Time to write and sync one audit group", Unit::Seconds, m.audit_commit_seconds.clone());
        r.register("audit_records", "Audit records made durable", m.audit_records.clone());
        r.register("audit_commit_failures", "Audit group commits that failed (the log then refuses writes)", m.audit_commit_failures.clone());
        r.register("holds_opened", "Holds opened, by kind", m.holds_opened.clone());
        r.register("holds_settled", "Holds that left pending, by kind and final state (expired included)", m.holds_settled.clone());
        r.register("holds_pending", "Holds waiting for a decision now, by kind", m.holds_open.clone());
        r.register_with_unit("hold_decision", "Time from opening a hold to its final state", Unit::Seconds, m.hold_decision_seconds.clone());
        r.register("chat_posts", "Slack and Teams posts, by channel and outcome (ok, failed)", m.chat_posts.clone());
        r.register("downstream_up", "1 while the downstream server is connected, else 0", m.downstream_up.clone());
        r.register("downstream_restarts", "Reconnections of a downstream server after it went down", m.downstream_restarts.clone());
        r.register("http_sessions", "Open streamable-HTTP sessions (bound to a principal)", m.http_sessions.clone());
        r.register("rejected_requests", "Requests refused before the pipeline ran, by reason", m.rejected.clone());
        m
    }
}

/// The OpenMetrics text exposition of every metric; `None` while metrics are off. The
/// `/metrics` listener serves it, and the control socket can too (for stdio-only gateways).
pub fn render() -> Option<String> {
    let metrics = get()?;
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &metrics.registry) {
        Ok(()) => Some(text),
        Err(error) => {
            tracing::error!(%error, "encoding metrics");
            None
        }
    }
}

/// A request turned away (see [`Rejected`]).
pub fn rejected(reason: Rejected) {
    if let Some(m) = get() {
        m.rejected.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc();
    }
}

/// A Slack (`"slack"`) or Teams (`"teams"`) post, and whether it went through.
pub fn chat_post(channel: &'static str, ok: bool) {
    if let Some(m) = get() {
        let outcome = if ok { "ok" } else { "failed" };
        m.chat_posts.get_or_create(&ChatLabels { channel, outcome }).inc();
    }
}

/// A downstream server connected (`true`) or went down (`false`).
pub fn downstream_up(server: &str, up: bool) {
    if let Some(m) = get() {
        m.downstream_up.get_or_create(&ServerLabel { server: server.to_owned() }).set(i64::from(up));
    }
}

/// A downstream server is being reconnected after it went down.
pub fn downstream_restarted(server: &str) {
    if let Some(m) = get() {
        m.downstream_restarts.get_or_create(&ServerLabel { server: server.to_owned() }).inc();
    }
}

/// An HTTP session opened.
pub fn http_session_opened() {
    if let Some(m) = get() {
        m.http_sessions.inc();
    }
}

/// An HTTP session closed.
pub fn http_session_closed() {
    if let Some(m) = get() {
        m.http_sessions.dec();
    }
}

/// Whether metrics are on (so callers can skip work that only feeds them).
pub fn metrics_on() -> bool {
    get().is_some()
}

/// A hold of `kind` (`confirm`, `approve`) was opened.
pub fn hold_opened(kind: &'static str) {
    if let Some(m) = get() {
        let kind = KindLabel { kind };
        m.holds_opened.get_or_create(&kind).inc();
        m.holds_open.get_or_create(&kind).inc();
    }
}

/// A hold of `kind` left pending for `state` after `took`.
pub fn hold_settled(kind: &'static str, state: &'static str, took: Duration) {
    if let Some(m) = get() {
        m.holds_open.get_or_create(&KindLabel { kind }).dec();
        let labels = HoldLabels { kind, state };
        m.holds_settled.get_or_create(&labels).inc();
        m.hold_decision_seconds.get_or_create(&labels).observe(took.as_secs_f64());
    }
}
