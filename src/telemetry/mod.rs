//! Telemetry: Prometheus metrics, OpenTelemetry traces over OTLP/HTTP, and the log format.
//!
//! Owns: the metrics registry and every metric's name, help and labels (`metrics.rs`), the
//! layer that turns call and stage spans into metrics (`layer.rs`), the OTLP tracer, the
//! stage spans and `traceparent` propagation through `_meta` (`trace.rs`), the
//! `tracing` subscriber (text or JSON lines on stderr), and the `/metrics` listener.
//! Uses: `tracing`, `prometheus-client`, `opentelemetry*`, the audit log's commit observer.
//! Must not: be on the call path when off (no registry, no exporter, stage spans disabled
//! at their callsite); take principals, arguments or client-sent strings as labels.
//!
//! [`render`] is the text exposition of every metric (`None` while metrics are off): the
//! `/metrics` listener serves it, and so does the control socket's `metrics` request
//! (`airlock metrics`), the only way to read a stdio-only gateway's metrics.

mod layer;
pub mod metrics;
pub mod trace;

use std::net::SocketAddr;

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use metrics::{
    Rejected, chat_post, downstream_restarted, downstream_up, hold_opened, hold_settled, http_session_closed,
    http_session_opened, metrics_on, rejected, render,
};
pub use trace::{Stage, continue_trace, inject_downstream, resolved, stage};

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `tracing`'s human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object a line, with the fields of the current span and its parents.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json` (the values of `AIRLOCK_LOG_FORMAT` and `[telemetry] log_format`).
    pub fn parse(value: &str) -> Option<LogFormat> {
        match value {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Whether the gateway keeps metrics (`[telemetry] metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsSwitch {
    /// Counted, readable with `airlock metrics` over the control socket, and on
    /// `metrics_listen` when set.
    On,
    /// No registry, no metrics layer: the call and stage spans stay disabled.
    Off,
}

/// `[telemetry]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `[telemetry] metrics`; `metrics_listen` requires `On`.
    pub metrics: MetricsSwitch,
    /// Where `/metrics` is also served over HTTP; `None`: only over the control socket.
    pub metrics_listen: Option<SocketAddr>,
    /// OTLP/HTTP traces endpoint (`…/v1/traces` is added to a bare base URL); `None`: off.
    pub otlp_endpoint: Option<url::Url>,
    /// `service.name` of the exported spans. Default `airlock`.
    pub service_name: String,
    /// Fraction of new traces sampled (a sampled parent's trace is always kept), 0..=1.
    pub sample_ratio: f64,
    /// Log lines: text (default) or JSON; `AIRLOCK_LOG_FORMAT` wins over it.
    pub log_format: LogFormat,
}

/// Metrics are on unless configured off, so a stdio-only gateway can be read with
/// `airlock metrics` without a config change. `benches/telemetry.py` measures what that costs
/// (README, "What telemetry costs"); `[telemetry] metrics = false` is telemetry off.
pub const DEFAULT_METRICS: MetricsSwitch = MetricsSwitch::On;

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: DEFAULT_METRICS,
            metrics_listen: None,
            otlp_endpoint: None,
            service_name: "airlock".to_owned(),
            sample_ratio: 1.0,
            log_format: LogFormat::Text,
        }
    }
}

/// What can go wrong starting telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `AIRLOCK_LOG_FORMAT` has a value other than `text` or `json`.
    #[error("AIRLOCK_LOG_FORMAT must be \"text\" or \"json\", not {0:?}")]
    LogFormat(String),
    /// The OTLP exporter could not be built.
    #[error("could not start the OTLP trace exporter for {endpoint}: {why}")]
    Exporter { endpoint: String, why: String },
    /// The metrics address could not be bound.
    #[error("could not listen on {addr} for /metrics: {why}")]
    Listen { addr: SocketAddr, why: std::io::Error },
}

/// Flushes and stops the trace exporter when dropped (outside any async runtime: the
/// exporter's blocking HTTP client must not be dropped inside one).
pub struct Guard {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("airlock: flushing traces: {error}");
        }
    }
}

/// The log format asked for: `AIRLOCK_LOG_FORMAT` if set, else `configured`. The stdio
/// bridge checks it too, so a launch with a bad value fails in the client's face rather
/// than in a background gateway's log.
pub fn log_format(configured: LogFormat) -> Result<LogFormat, TelemetryError> {
    match std::env::var("AIRLOCK_LOG_FORMAT") {
        Ok(value) => LogFormat::parse(value.trim()).ok_or(TelemetryError::LogFormat(value)),
        Err(_) => Ok(configured),
    }
}

/// Installs the process's `tracing` subscriber: logs on stderr (in stdio mode stdout is the
/// protocol) filtered by `AIRLOCK_LOG` (else `default_filter`), plus, as `config` asks,
/// the metrics layer and the OTLP exporter. Call once, before any async runtime starts.
pub fn install(config: &TelemetryConfig, default_filter: &str) -> Result<Guard, TelemetryError> {
    let format = log_format(config.log_format)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let log_records = filter.max_level_hint();
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let metrics = (config.metrics == MetricsSwitch::On).then(|| {
        metrics::enable();
        layer::MetricsLayer.with_filter(tracing_subscriber::filter::filter_fn(layer::wanted))
    });
    let (otel, tracer) = match &config.otlp_endpoint {
        Some(endpoint) => {
            let provider = trace::provider(endpoint, &config.service_name, config.sample_ratio)?;
            let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "airlock");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(tracing_subscriber::filter::filter_fn(trace::wanted));
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    // Errors from a second install (tests that run commands in-process) are ignored: the
    // first subscriber stays.
    let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).with(metrics).with(otel).try_init();
    // Dependencies' `log` records (sled logs on its hot path) are events, which only the
    // log layer shows. The span-only filters above have no level, so without this cap every
    // `log::trace!` in sled would be dispatched through each layer: about 30k instructions
    // per audited call.
    if let Some(level) = log_records {
        log::set_max_level(log_level(level));
    }
    Ok(Guard { tracer })
}

fn log_level(level: tracing::level_filters::LevelFilter) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter;
    match level {
        LevelFilter::OFF => log::LevelFilter::Off,
        LevelFilter::ERROR => log::LevelFilter::Error,
        LevelFilter::WARN => log::LevelFilter::Warn,
        LevelFilter::INFO => log::LevelFilter::Info,
        LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Logs only, for the commands that serve nothing (`check`, `log`, …).
pub fn install_logs(default_filter: &str) -> Result<Guard, TelemetryError> {
    let logs_only = TelemetryConfig { metrics: MetricsSwitch::Off, ..TelemetryConfig::default() };
    install(&logs_only, default_filter)
}

/// Binds `addr` and serves `GET /metrics` there until `shutdown` fires. Returns the bound
/// address (port 0 picks one).
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<SocketAddr, TelemetryError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|why| TelemetryError::Listen { addr, why })?;
    let local = listener.local_addr().map_err(|why| TelemetryError::Listen { addr, why })?;
    let router = axum::Router::new().route("/metrics", axum::routing::get(metrics_page));
    tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = served.await {
            tracing::error!(%error, "the /metrics listener failed");
        }
    });
    Ok(local)
}

async fn metrics_page() -> axum::response::Response {
    use axum::response::IntoResponse;
    match render() {
        Some(text) => {
            ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
        }
        None => http::StatusCode::NOT_FOUND.into_response(),
    }
}
