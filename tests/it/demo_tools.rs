//! `airlock demo-tools` driven through the built binary with rmcp's client over stdio.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest,
    ElicitRequestParams, ElicitResult, ElicitationAction, Implementation, JsonObject,
    ProtocolVersion, Request, RequestMetaObject, ServerNotification, SubscriptionFilter,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RequestContext,
    RunningService,
};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Generous bound for waiting on an effect that arrives asynchronously; never a measurement.
const PATIENCE: Duration = Duration::from_secs(20);

/// How the test client answers `elicitation/create`.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Confirm,
    Decline,
    Cancel,
}

struct TestClient {
    answer: Arc<Mutex<Answer>>,
    list_changed: mpsc::UnboundedSender<()>,
}

impl ClientHandler for TestClient {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        assert!(matches!(
            request,
            ElicitRequestParams::FormElicitationParams { .. }
        ));
        let answer = *self.answer.lock().unwrap();
        Ok(match answer {
            Answer::Confirm => {
                ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": true}))
            }
            Answer::Decline => ElicitResult::new(ElicitationAction::Decline),
            Answer::Cancel => ElicitResult::new(ElicitationAction::Cancel),
        })
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.list_changed.send(());
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("airlock-it", "0"),
        )
    }
}

struct Session {
    client: RunningService<RoleClient, TestClient>,
    answer: Arc<Mutex<Answer>>,
    list_changed: mpsc::UnboundedReceiver<()>,
    wire: Arc<Mutex<Vec<Value>>>,
    sandbox: PathBuf,
    _dir: tempfile::TempDir,
}

fn child_transport(dir: &Path, sandbox: &Path) -> TokioChildProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
    command.arg("demo-tools").arg("--sandbox").arg(sandbox);
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap();
    transport
}

async fn start_with(lifecycle: ClientLifecycleMode) -> Session {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("sandbox");
    let wire = Arc::new(Mutex::new(Vec::new()));
    let transport = crate::util::Recorder::new(child_transport(dir.path(), &sandbox), wire.clone());
    let answer = Arc::new(Mutex::new(Answer::Confirm));
    let (tx, list_changed) = mpsc::unbounded_channel();
    let handler = TestClient {
        answer: answer.clone(),
        list_changed: tx,
    };
    let client = handler
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .unwrap();
    Session {
        client,
        answer,
        list_changed,
        wire,
        sandbox,
        _dir: dir,
    }
}

async fn start() -> Session {
    start_with(ClientLifecycleMode::Initialize).await
}

fn args(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("arguments must be an object, got {other}"),
    }
}

impl Session {
    async fn call(&self, tool: &'static str, arguments: Value) -> CallToolResult {
        let params = CallToolRequestParams::new(tool).with_arguments(args(arguments));
        self.client.call_tool(params).await.unwrap()
    }
}

use crate::util::text_of;

async fn wait_for_file(path: &Path) {
    tokio::time::timeout(PATIENCE, async {
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never appeared", path.display()));
}

#[tokio::test]
async fn tools_list_serves_every_tool_with_annotations_and_schemas() {
    let session = start().await;
    let tools = session.client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "read_customer",
        "search_logs",
        "export_customers",
        "grant_role",
        "delete_bucket",
        "restart_service",
        "run_migration",
        "rotate_credentials",
        "echo",
        "content_gallery",
        "fail",
        "sleep",
        "crash",
        "add_tool",
        "set_description",
        "change_tools",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for tool in &tools {
        let annotations = tool
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no annotations", tool.name));
        assert!(annotations.title.is_some(), "{} has no title", tool.name);
        assert!(annotations.read_only_hint.is_some());
        assert!(annotations.destructive_hint.is_some());
        assert!(annotations.idempotent_hint.is_some());
        assert!(annotations.open_world_hint.is_some());
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            tool.name
        );
    }
    let by_name = |name: &str| tools.iter().find(|t| t.name == name).unwrap().clone();
    assert_eq!(
        by_name("read_customer").annotations.unwrap().read_only_hint,
        Some(true)
    );
    assert_eq!(
        by_name("delete_bucket")
            .annotations
            .unwrap()
            .destructive_hint,
        Some(true)
    );
    assert_eq!(
        by_name("grant_role").annotations.unwrap().destructive_hint,
        Some(false)
    );
    let bucket_schema = by_name("delete_bucket").input_schema;
    assert_eq!(bucket_schema["required"], json!(["bucket"]));
    assert!(by_name("content_gallery").output_schema.is_some());
}

#[tokio::test]
async fn tools_act_on_the_sandbox() {
    let session = start().await;
    let sandbox = &session.sandbox;
    assert!(sandbox.join("buckets/tmp-scratch").is_dir());

    let deleted = session
        .call("delete_bucket", json!({"bucket": "tmp-scratch"}))
        .await;
    assert_eq!(deleted.is_error, Some(false), "{}", text_of(&deleted));
    assert!(!sandbox.join("buckets/tmp-scratch").exists());
    assert!(sandbox.join("buckets/prod-customers").is_dir());
    let again = session
        .call("delete_bucket", json!({"bucket": "tmp-scratch"}))
        .await;
    assert_eq!(again.is_error, Some(true));
    let escape = session
        .call("delete_bucket", json!({"bucket": "../customers.json"}))
        .await;
    assert_eq!(escape.is_error, Some(true));
    assert!(sandbox.join("customers.json").exists());

    let customer = session.call("read_customer", json!({"id": "C-1002"})).await;
    assert!(text_of(&customer).contains("Contoso"));
    let logs = session
        .call("search_logs", json!({"query": "error", "limit": 2}))
        .await;
    assert_eq!(text_of(&logs).lines().count(), 2);

    session
        .call(
            "export_customers",
            json!({"destination": "all.csv", "format": "csv"}),
        )
        .await;
    let csv = std::fs::read_to_string(sandbox.join("exports/all.csv")).unwrap();
    assert!(csv.starts_with("id,name,email"));
    assert!(csv.contains("C-1004"));

    session
        .call("grant_role", json!({"user": "mallory", "role": "admin"}))
        .await;
    let roles: Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox.join("roles.json")).unwrap())
            .unwrap();
    assert!(
        roles
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["user"] == "mallory" && g["role"] == "admin")
    );

    session
        .call("restart_service", json!({"service": "billing-api"}))
        .await;
    let restarts = std::fs::read_to_string(sandbox.join("restarts.log")).unwrap();
    assert!(restarts.contains("billing-api"));

    let failed = session.call("fail", json!({"message": "boom"})).await;
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(text_of(&failed), "boom");
    let echoed = session.call("echo", json!({"text": "hi there"})).await;
    assert_eq!(text_of(&echoed), "hi there");
}

#[tokio::test]
async fn approval_receipt_in_meta_is_appended_to_receipts_jsonl() {
    let session = start().await;
    let receipt =
        json!({"id": "apr_1", "approvers": ["bob"], "args_sha256": "ab12", "signature": "sig"});
    let mut meta = RequestMetaObject::new();
    meta.insert("airlock/approval".to_string(), receipt.clone());
    let mut params = CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "x"})));
    params.meta = Some(meta);
    session.client.call_tool(params).await.unwrap();
    session.call("echo", json!({"text": "no receipt"})).await;

    let text = std::fs::read_to_string(session.sandbox.join("receipts.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, vec![receipt]);
}

#[tokio::test]
async fn migration_progress_arrives_in_order_before_the_result() {
    let session = start().await;
    let result = session.call("run_migration", json!({"steps": 5})).await;
    assert!(text_of(&result).contains("5 steps"));

    let wire = session.wire.lock().unwrap().clone();
    let mut progress = Vec::new();
    let mut result_at = None;
    for (index, message) in wire.iter().enumerate() {
        if message["method"] == "notifications/progress" {
            progress.push((index, message["params"]["progress"].as_f64().unwrap()));
        }
        if message["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("migration finished"))
        {
            result_at = Some(index);
        }
    }
    let result_at = result_at.expect("result not seen on the wire");
    let values: Vec<f64> = progress.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(progress.iter().all(|(index, _)| *index < result_at));
}

#[tokio::test]
async fn rotate_credentials_acts_only_when_the_user_confirms() {
    let session = start().await;
    let log = session.sandbox.join("credentials.log");

    *session.answer.lock().unwrap() = Answer::Decline;
    let declined = session
        .call("rotate_credentials", json!({"service": "billing-api"}))
        .await;
    assert_eq!(declined.is_error, Some(true));
    assert!(text_of(&declined).contains("declined"));
    assert!(!log.exists());

    *session.answer.lock().unwrap() = Answer::Cancel;
    let cancelled = session
        .call("rotate_credentials", json!({"service": "billing-api"}))
        .await;
    assert!(text_of(&cancelled).contains("cancelled"));
    assert!(!log.exists());

    *session.answer.lock().unwrap() = Answer::Confirm;
    let rotated = session
        .call("rotate_credentials", json!({"service": "billing-api"}))
        .await;
    assert_eq!(rotated.is_error, Some(false), "{}", text_of(&rotated));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}

#[tokio::test]
async fn rotate_credentials_asks_a_2026_client_with_input_required() {
    let session = start_with(ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    })
    .await;
    // call_tool answers the InputRequiredResult through create_elicitation and retries.
    let rotated = session
        .call("rotate_credentials", json!({"service": "auth"}))
        .await;
    assert_eq!(rotated.is_error, Some(false), "{}", text_of(&rotated));
    let wire = session.wire.lock().unwrap().clone();
    assert!(
        wire.iter()
            .any(|m| m["result"]["resultType"] == "input_required")
    );
    assert!(session.sandbox.join("credentials.log").exists());
}

#[tokio::test]
async fn cancelled_sleep_leaves_a_marker() {
    let session = start().await;
    let request = ClientRequest::CallToolRequest(Request::new(
        CallToolRequestParams::new("sleep").with_arguments(args(json!({"ms": 60_000}))),
    ));
    let handle = session
        .client
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let id = handle.id.to_string();
    handle.cancel(Some("test".to_string())).await.unwrap();
    let marker = session.sandbox.join("cancelled").join(format!("{id}.json"));
    wait_for_file(&marker).await;
    let detail: Value = serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
    assert_eq!(detail["tool"], "sleep");
}

#[tokio::test]
async fn content_gallery_returns_every_content_type() {
    let session = start().await;
    let result = session.call("content_gallery", json!({})).await;
    let wire = serde_json::to_value(&result).unwrap();
    let types: Vec<&str> = wire["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "text",
            "image",
            "audio",
            "resource_link",
            "resource",
            "resource"
        ]
    );
    assert!(wire["content"][4]["resource"]["text"].is_string());
    assert!(wire["content"][5]["resource"]["blob"].is_string());
    assert_eq!(wire["content"][1]["mimeType"], "image/png");
    assert_eq!(wire["structuredContent"]["count"], 6);
    assert_eq!(wire["_meta"]["demo/gallery"]["version"], 1);
}

#[tokio::test]
async fn set_description_changes_tools_list_and_notifies() {
    let mut session = start().await;
    session
        .call(
            "set_description",
            json!({"tool": "echo", "description": "Echo, but now suspicious."}),
        )
        .await;
    tokio::time::timeout(PATIENCE, session.list_changed.recv())
        .await
        .unwrap()
        .unwrap();
    let tools = session.client.list_all_tools().await.unwrap();
    let echo = tools.iter().find(|t| t.name == "echo").unwrap();
    assert_eq!(
        echo.description.as_deref(),
        Some("Echo, but now suspicious.")
    );

    session.call("add_tool", json!({"name": "late_tool"})).await;
    tokio::time::timeout(PATIENCE, session.list_changed.recv())
        .await
        .unwrap()
        .unwrap();
    let tools = session.client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "late_tool"));
    let called = session.call("late_tool", json!({"text": "hello"})).await;
    assert_eq!(text_of(&called), "called late_tool hello");
}

#[tokio::test]
async fn a_2026_client_hears_list_changed_on_its_listen_stream() {
    let session = start_with(ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    })
    .await;
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    let mut subscription = session.client.peer().listen(filter).await.unwrap();
    // `listen` may return before the server has registered the stream, so a change made
    // at once can go unheard: keep changing the tool until one change is heard.
    let mut heard = None;
    for round in 0..10 {
        session
            .call(
                "set_description",
                json!({"tool": "echo", "description": format!("changed {round}")}),
            )
            .await;
        if let Ok(next) = tokio::time::timeout(PATIENCE / 10, subscription.next()).await {
            heard = Some(next);
            break;
        }
    }
    let notification = heard.expect("no change was heard").unwrap().unwrap();
    assert!(matches!(
        notification,
        ServerNotification::ToolListChangedNotification(_)
    ));
    let tools = session.client.list_all_tools().await.unwrap();
    let echo = tools.iter().find(|t| t.name == "echo").unwrap();
    assert!(echo.description.as_deref().is_some_and(|d| d.starts_with("changed")));
}

#[tokio::test]
async fn crash_ends_the_process_and_the_sandbox_keeps_its_state() {
    let session = start().await;
    session
        .call("delete_bucket", json!({"bucket": "staging-assets"}))
        .await;
    let params = CallToolRequestParams::new("crash");
    assert!(session.client.call_tool(params).await.is_err());

    // A restarted server on the same sandbox does not re-seed deleted buckets.
    let dir = tempfile::tempdir().unwrap();
    let transport = child_transport(dir.path(), &session.sandbox);
    let (tx, _rx) = mpsc::unbounded_channel();
    let handler = TestClient {
        answer: Arc::new(Mutex::new(Answer::Confirm)),
        list_changed: tx,
    };
    let restarted = handler.serve(transport).await.unwrap();
    let params = CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "back"})));
    assert_eq!(text_of(&restarted.call_tool(params).await.unwrap()), "back");
    assert!(!session.sandbox.join("buckets/staging-assets").exists());
    assert!(session.sandbox.join("buckets/prod-customers").exists());
}

#[tokio::test]
async fn resources_and_prompt_are_served() {
    let session = start().await;
    let resources = session.client.list_all_resources().await.unwrap();
    assert!(resources.iter().any(|r| r.uri == "demo://customers"));
    let read = session
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "demo://customers",
        ))
        .await
        .unwrap();
    let text = serde_json::to_string(&read.contents).unwrap();
    assert!(text.contains("C-1001"));
    let prompts = session.client.list_all_prompts().await.unwrap();
    assert_eq!(prompts[0].name, "incident_summary");
}
