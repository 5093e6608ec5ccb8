//! Telemetry through the binary: `/metrics` on its own listener with counts that match the
//! calls made, OTLP/HTTP traces decoded with the official protobuf types (call span, stage
//! children, a client's `traceparent` continued), and JSON log lines with span fields.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, RequestMetaObject};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::util::{Setup, TestClient, airlock, call, eventually};

/// A running `airlock serve --http 127.0.0.1:0` and every stderr line it printed.
struct Gateway {
    child: tokio::process::Child,
    url: String,
    metrics: Option<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

async fn start(setup: &Setup, env: &[(&str, &str)]) -> Gateway {
    let mut child = tokio::process::Command::new(airlock())
        .args(["serve", "--config"])
        .arg(setup.config())
        .args(["--http", "127.0.0.1:0"])
        .env("AIRLOCK_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn airlock");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut metrics = None;
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            eprintln!("[airlock] {line}");
            stderr.lock().expect("lines").push(line.clone());
            if let Some(url) = line.strip_prefix("airlock: metrics on ") {
                metrics = Some(url.trim().to_owned());
            }
            if let Some(url) = line.strip_prefix("airlock: listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("airlock exited before listening");
    })
    .await
    .expect("airlock did not start listening within 60 s");
    let kept = stderr.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[airlock] {line}");
            kept.lock().expect("lines").push(line);
        }
    });
    Gateway { child, url, metrics, stderr }
}

impl Gateway {
    async fn client(&self) -> rmcp::service::RunningService<rmcp::RoleClient, TestClient> {
        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("{}/mcp", self.url));
        TestClient::new().serve(transport).await.expect("initialize over HTTP")
    }
}

/// Stops the gateway with SIGTERM (it flushes its spans on the way out).
async fn stop(mut child: tokio::process::Child) {
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("gateway stops").expect("wait");
}

fn with_telemetry(table: &str) -> Setup {
    let setup = Setup::new(&format!("[gateway]\ndata_dir = \"data\"\n\n[telemetry]\n{table}"));
    setup.demo("demo");
    setup.policy("allow-all", crate::util::ALLOW_ALL);
    setup
}

/// The value of the one sample named `name` whose labels include all of `labels`.
pub(crate) fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_calls_by_tool_and_decision_on_their_own_listener() {
    let setup = with_telemetry("metrics_listen = \"127.0.0.1:0\"\n");
    let gateway = start(&setup, &[]).await;
    let metrics = gateway.metrics.clone().expect("the gateway says where /metrics is");
    let client = gateway.client().await;
    for i in 0..3 {
        client.call_tool(call("demo__echo", json!({"text": format!("call {i}")}))).await.expect("call");
    }
    client.call_tool(call("demo__no_such_tool", json!({}))).await.expect_err("unknown tool");
    let invalid = client.call_tool(call("demo__echo", json!({"text": 5}))).await.expect("refusal");
    assert_eq!(invalid.is_error, Some(true));
    let http = reqwest::Client::new();
    let foreign = http.post(format!("{}/mcp", gateway.url)).header("Host", "evil.example").body("{}").send().await.expect("POST");
    assert_eq!(foreign.status(), 403);
    let text = http.get(&metrics).send().await.expect("GET /metrics").text().await.expect("body");
    let echo = ["server=\"demo\"", "tool=\"demo__echo\""];
    assert_eq!(sample(&text, "airlock_calls_total", &[echo[0], echo[1], "decision=\"allow\""]), Some(3.0), "{text}");
    assert_eq!(sample(&text, "airlock_calls_total", &[echo[0], echo[1], "decision=\"invalid_arguments\""]), Some(1.0), "{text}");
    // A name the catalog does not have never becomes a label.
    assert!(!text.contains("no_such_tool"), "{text}");
    assert_eq!(sample(&text, "airlock_calls_total", &["tool=\"unknown\"", "decision=\"unknown_tool\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "airlock_rejected_requests_total", &["reason=\"schema\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "airlock_stage_duration_seconds_count", &["stage=\"downstream\""]), Some(3.0), "{text}");
    assert_eq!(sample(&text, "airlock_stage_duration_seconds_count", &["stage=\"validate\""]), Some(4.0), "{text}");
    assert_eq!(sample(&text, "airlock_call_duration_seconds_count", &["decision=\"allow\""]), Some(3.0), "{text}");
    // 3 allowed calls log 4 records each, the 2 refused ones 2 each, plus start-up records.
    let records = sample(&text, "airlock_audit_records_total", &[]).expect("records counted");
    assert!(records >= 16.0, "{records}\n{text}");
    assert_eq!(sample(&text, "airlock_downstream_up", &["server=\"demo\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "airlock_rejected_requests_total", &["reason=\"host_origin\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "airlock_http_sessions", &[]), Some(1.0), "{text}");
    // Every metric the shipped Grafana dashboard queries is exported (families with no
    // sample yet, such as holds in this run, are checked against the registry's source).
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grafana-dashboard.json")).expect("dashboard");
    let registry = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/telemetry/metrics.rs")).expect("metrics.rs");
    let names = regex::Regex::new(r"airlock_[a-z_]+").expect("regex");
    for name in names.find_iter(&dashboard).map(|m| m.as_str()) {
        let family = ["_total", "_bucket", "_count", "_sum"].iter().fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        let registered = family.strip_prefix("airlock_").map(|f| f.strip_suffix("_seconds").unwrap_or(f)).is_some_and(|f| {
            registry.contains(&format!("register(\"{f}\"")) || registry.contains(&format!("register_with_unit(\"{f}\"")) || registry.contains(&format!("\"{f}\",\n"))
        });
        assert!(text.contains(&format!("# TYPE {family} ")) || registered, "the dashboard queries {name}, which is not exported");
    }
    // The MCP listener does not serve metrics.
    let main = http.get(format!("{}/metrics", gateway.url)).send().await.expect("GET main /metrics");
    assert_eq!(main.status(), 404);
    client.cancel().await.expect("close");
    stop(gateway.child).await;
}

#[tokio::test]
async fn without_metrics_listen_no_http_listener_serves_metrics() {
    let setup = with_telemetry("");
    let gateway = start(&setup, &[]).await;
    assert!(gateway.metrics.is_none());
    let main = reqwest::get(format!("{}/metrics", gateway.url)).await.expect("GET /metrics");
    assert_eq!(main.status(), 404);
    stop(gateway.child).await;
}

#[tokio::test]
async fn bad_telemetry_keys_name_their_line() {
    let setup = with_telemetry("sample_ratio = 1.5\nlog_format = \"xml\"\nmetrics_listen = \"everywhere\"\n");
    let out = std::process::Command::new(airlock()).args(["check", "--config"]).arg(setup.config()).output().expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stderr.contains("airlock.toml:5: key \"telemetry.sample_ratio\""), "{stderr}");
    assert!(stderr.contains("airlock.toml:6: key \"telemetry.log_format\""), "{stderr}");
    assert!(stderr.contains("airlock.toml:7: key \"telemetry.metrics_listen\""), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_call_span_fields() {
    let setup = with_telemetry("");
    let gateway = start(&setup, &[("AIRLOCK_LOG_FORMAT", "json"), ("AIRLOCK_LOG", "warn,airlock::gateway=debug")]).await;
    let client = gateway.client().await;
    client.call_tool(call("demo__echo", json!({"text": "logged"}))).await.expect("call");
    let found = eventually(Duration::from_secs(10), || {
        gateway.stderr.lock().expect("lines").iter().any(|l| l.contains("call completed"))
    })
    .await;
    assert!(found, "no `call completed` line");
    let lines = gateway.stderr.lock().expect("lines").clone();
    let logged: Vec<Value> = lines.iter().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect("every log line is JSON")).collect();
    let done = logged.iter().find(|l| l["fields"]["message"] == "call completed").expect("call completed");
    assert_eq!(done["span"]["name"], "call");
    assert_eq!(done["span"]["tool"], "demo__echo");
    assert_eq!(done["span"]["airlock.decision"], "allow");
    assert!(done["span"]["call_id"].as_str().is_some_and(|id| !id.is_empty()), "{done}");
    client.cancel().await.expect("close");
    stop(gateway.child).await;
}

#[tokio::test]
async fn an_unknown_log_format_is_refused_at_start() {
    let setup = with_telemetry("");
    let out = std::process::Command::new(airlock())
        .args(["serve", "--config"])
        .arg(setup.config())
        .env("AIRLOCK_LOG_FORMAT", "xml")
        .stdin(Stdio::null())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AIRLOCK_LOG_FORMAT must be \"text\" or \"json\""), "{stderr}");
}

/// A local OTLP/HTTP receiver: keeps every `ExportTraceServiceRequest` posted to /v1/traces.
async fn receiver() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().expect("bodies").push(body.to_vec());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (format!("http://{addr}"), bodies)
}

#[tokio::test]
async fn traces_reach_an_otlp_receiver_with_stage_children_under_the_clients_trace() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    let (endpoint, bodies) = receiver().await;
    let setup = with_telemetry(&format!("otlp_endpoint = \"{endpoint}\"\nservice_name = \"airlock-test\"\n"));
    let gateway = start(&setup, &[]).await;
    let client = gateway.client().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut meta = serde_json::Map::new();
    meta.insert("traceparent".into(), json!(format!("00-{trace_id}-{parent_id}-01")));
    let mut request: CallToolRequestParams = call("demo__echo", json!({"text": "traced"}));
    request.meta = Some(RequestMetaObject(rmcp::model::MetaObject(meta)));
    client.call_tool(request).await.expect("call");
    client.cancel().await.expect("close");
    stop(gateway.child).await;

    let spans: Vec<Span> = bodies
        .lock()
        .expect("bodies")
        .iter()
        .flat_map(|b| ExportTraceServiceRequest::decode(b.as_slice()).expect("OTLP protobuf").resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let names: Vec<(&str, i32)> = spans.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    let call_span = spans.iter().find(|s| s.name == "tools/call demo__echo" && s.kind == 2).unwrap_or_else(|| panic!("no server span for the call among {names:?}"));
    assert_eq!(hex::encode(&call_span.trace_id), trace_id, "the client's trace continues");
    assert_eq!(hex::encode(&call_span.parent_span_id), parent_id);
    let attr = |span: &Span, key: &str| {
        span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).map(|v| format!("{:?}", v.value))
    };
    assert!(attr(call_span, "mcp.method.name").is_some_and(|v| v.contains("tools/call")));
    assert!(attr(call_span, "gen_ai.tool.name").is_some_and(|v| v.contains("demo__echo")));
    assert!(attr(call_span, "airlock.decision").is_some_and(|v| v.contains("allow")));
    let children: Vec<&str> =
        spans.iter().filter(|s| s.parent_span_id == call_span.span_id).map(|s| s.name.as_str()).collect();
    for stage in ["validate", "decide", "audit_commit", "tools/call echo"] {
        assert!(children.contains(&stage), "{stage} missing among {children:?}");
    }
    let downstream = spans.iter().find(|s| s.name == "tools/call echo").expect("downstream span");
    assert_eq!(downstream.kind, 3, "the downstream request is a client span");
}
