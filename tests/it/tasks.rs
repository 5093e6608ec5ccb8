//! Held calls as MCP tasks (extension `io.modelcontextprotocol/tasks`), through the real
//! binary with rmcp's client: a call policy holds comes back as a task handle at once, is
//! polled with `tasks/get`, decided over `/api/v1/approvals`, and completes with the
//! downstream's real result; denial, expiry and `tasks/cancel` end it plainly; a caller
//! that reconnects reads its task and nobody else can. A `confirm` hold asks its caller
//! through the task's `input_required` status, answered with `tasks/update`.

use std::time::Duration;

use rmcp::model::{
    CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig, GetTaskParams, Implementation,
    TaskPayload, TaskStatus, UpdateTaskParams,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::approvals_api::{api, decide, pending, setup, token};
use crate::util::{HttpGateway, call, export};

/// A client that declares the tasks extension and nothing else.
#[derive(Clone)]
pub(crate) struct TaskClient;

impl ClientHandler for TaskClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::builder().enable_tasks().build(), Implementation::new("airlock-task-tests", "0"))
    }
}

pub(crate) async fn tasks_client_as(gateway: &HttpGateway, name: &str) -> RunningService<RoleClient, TaskClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token(name));
    TaskClient.serve(StreamableHttpClientTransport::from_config(config)).await.expect("initialize over HTTP")
}

/// Makes the call and returns the task handle's JSON (it must be one).
/// `who` gets for `task_id` the answer an unknown task gets, and its cancel is
/// acknowledged (as for any id) without touching the task.
pub(crate) async fn unseen_by(gateway: &HttpGateway, who: &str, task_id: &str) {
    let other = tasks_client_as(gateway, who).await;
    let unknown_id = "tk-00000000000000000000000000000000";
    let theirs = other.peer().get_task(GetTaskParams::new(task_id)).await.expect_err("not theirs");
    let unknown = other.peer().get_task(GetTaskParams::new(unknown_id)).await.expect_err("unknown");
    let shape = |e: rmcp::ServiceError| e.to_string().replace(task_id, "ID").replace(unknown_id, "ID");
    assert_eq!(shape(theirs), shape(unknown));
    other.peer().cancel_task(CancelTaskParams::new(task_id)).await.expect("acknowledged for any id");
}

pub(crate) async fn start(client: &RunningService<RoleClient, TaskClient>, tool: &str, args: Value) -> Value {
    let response = client.peer().call_tool_once(call(tool, args)).await.expect("tools/call answers");
    let CallToolResponse::Task(created) = response else { panic!("expected a task handle, got {response:?}") };
    serde_json::to_value(&created).expect("json")
}

pub(crate) async fn get(client: &RunningService<RoleClient, TaskClient>, id: &str) -> rmcp::model::GetTaskResult {
    client.peer().get_task(GetTaskParams::new(id)).await.expect("tasks/get answers")
}

/// Polls until the task ends. The limit is a hang guard, not a timing assertion.
pub(crate) async fn ended(client: &RunningService<RoleClient, TaskClient>, id: &str) -> rmcp::model::GetTaskResult {
    for _ in 0..600 {
        let task = get(client, id).await;
        if task.task.status().is_terminal() {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {id} never ended");
}

/// Stops the gateway (records are durable before each answer) and reads its log.
async fn stop_and_export(mut gateway: HttpGateway, setup: &crate::util::Setup) -> Vec<Value> {
    let _ = gateway.child.kill().await;
    export(&setup.data_dir())
}

pub(crate) fn result_text(task: &rmcp::model::GetTaskResult) -> (bool, String) {
    let TaskPayload::Completed { result } = &task.task.payload else { panic!("not completed: {task:?}") };
    let text = result["content"][0]["text"].as_str().unwrap_or_default().to_owned();
    (result.get("isError") == Some(&Value::Bool(true)), text)
}

pub(crate) fn task_statuses(records: &[Value], id: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["kind"] == "task_status" && r["detail"]["task_id"] == id)
        .map(|r| r["detail"]["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_held_call_becomes_a_task_and_completes_with_the_real_result_once_approved() {
    let setup = setup();
    let gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;
    let handle = start(&carol, "demo__grant_role", json!({"user": "erin", "role": "admin"})).await;
    assert_eq!(handle["resultType"], "task", "{handle}");
    assert_eq!(handle["status"], "working", "{handle}");
    assert!(handle["pollIntervalMs"].as_u64().is_some(), "{handle}");
    assert!(handle["ttlMs"].as_u64().is_some_and(|ttl| ttl > 600_000), "expiry plus retention: {handle}");
    let approval = pending(&gateway, "demo__grant_role").await;
    let id = approval["id"].as_str().expect("approval id").to_owned();
    let message = handle["statusMessage"].as_str().unwrap_or_default();
    assert!(message.contains(&id) && message.contains("0 of 1") && message.contains("expires at"), "{message}");
    assert!(message.contains(&format!("/approvals/{id}")), "where to decide: {message}");
    let task_id = handle["taskId"].as_str().expect("task id").to_owned();

    // No request is held open: polling is all the client does.
    let polled = get(&carol, &task_id).await;
    assert_eq!(polled.task.status(), TaskStatus::Working);
    assert!(!setup.sandbox("demo").join("roles.json").exists() || !std::fs::read_to_string(setup.sandbox("demo").join("roles.json")).unwrap_or_default().contains("erin"));

    let (status, body) = decide(&gateway, &id, "bob", "approve", None).await;
    assert_eq!(status, 200, "{body}");
    let done = ended(&carol, &task_id).await;
    assert_eq!(done.task.status(), TaskStatus::Completed, "{done:?}");
    let (is_error, text) = result_text(&done);
    assert!(!is_error && text.contains("granted role \"admin\" to \"erin\""), "{text}");
    // It ran exactly once, with its receipt, as a call held open would.
    let roles = std::fs::read_to_string(setup.sandbox("demo").join("roles.json")).expect("roles.json");
    assert_eq!(roles.matches("erin").count(), 1, "{roles}");
    let (_, shown) = api(&gateway, "GET", &format!("/api/v1/approvals/{id}"), Some("bob"), None).await;
    assert_eq!(shown["state"], "approved", "{shown}");
    let records = stop_and_export(gateway, &setup).await;
    let forwarded = records.iter().filter(|r| r["kind"] == "call_forwarded" && r["tool"] == "demo__grant_role").count();
    assert_eq!(forwarded, 1);
    assert_eq!(task_statuses(&records, &task_id), ["working", "completed"]);
}

#[tokio::test]
async fn denied_expired_and_cancelled_tasks_end_plainly_and_nothing_runs() {
    let setup = setup();
    let gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;

    let denied = start(&carol, "demo__grant_role", json!({"user": "erin", "role": "admin"})).await;
    let approval = pending(&gateway, "demo__grant_role").await;
    let (status, _) = decide(&gateway, approval["id"].as_str().expect("id"), "bob", "deny", Some("not today")).await;
    assert_eq!(status, 200);
    let done = ended(&carol, denied["taskId"].as_str().expect("id")).await;
    let (is_error, text) = result_text(&done);
    assert!(is_error && text.starts_with("Denied by bob") && text.contains("not today"), "{text}");
    assert!(text.contains("the call was not forwarded"), "{text}");

    // `restarts-expire` holds for one second.
    let expired = start(&carol, "demo__restart_service", json!({"service": "db"})).await;
    let done = ended(&carol, expired["taskId"].as_str().expect("id")).await;
    let (is_error, text) = result_text(&done);
    assert!(is_error && text.contains("expired at") && text.contains("not forwarded"), "{text}");

    let cancelled = start(&carol, "demo__run_migration", json!({"steps": 3})).await;
    let task_id = cancelled["taskId"].as_str().expect("id").to_owned();
    let approval = pending(&gateway, "demo__run_migration").await;
    carol.peer().cancel_task(CancelTaskParams::new(&task_id)).await.expect("tasks/cancel acks");
    let done = ended(&carol, &task_id).await;
    assert_eq!(done.task.status(), TaskStatus::Cancelled, "{done:?}");
    let message = done.task.task.status_message.clone().unwrap_or_default();
    assert!(message.contains("cancelled") && message.contains("not forwarded"), "{message}");
    let (_, shown) = api(&gateway, "GET", &format!("/api/v1/approvals/{}", approval["id"].as_str().expect("id")), Some("bob"), None).await;
    assert_eq!(shown["state"], "cancelled", "the hold is cancelled with its task: {shown}");
    // A decision after the cancellation runs nothing.
    let (status, _) = decide(&gateway, approval["id"].as_str().expect("id"), "bob", "approve", None).await;
    assert_ne!(status, 200);

    let records = stop_and_export(gateway, &setup).await;
    assert!(!records.iter().any(|r| r["kind"] == "call_forwarded"), "nothing was forwarded");
    assert!(!setup.sandbox("demo").join("restarts.log").exists());
    assert!(!setup.sandbox("demo").join("migrations.log").exists());
    assert_eq!(task_statuses(&records, &task_id), ["working", "cancelled"]);
}

#[tokio::test]
async fn a_reconnecting_caller_reads_its_task_and_another_caller_cannot() {
    let setup = setup();
    let gateway = setup.http().await;
    let first = tasks_client_as(&gateway, "carol").await;
    let handle = start(&first, "demo__grant_role", json!({"user": "frank", "role": "viewer"})).await;
    let task_id = handle["taskId"].as_str().expect("id").to_owned();
    first.cancel().await.expect("close the first session");

    // Another caller gets the answer an unknown task gets, and cannot cancel it.
    unseen_by(&gateway, "mallory", &task_id).await;

    // A new session of the same caller polls it, and gets the result.
    let again = tasks_client_as(&gateway, "carol").await;
    assert_eq!(get(&again, &task_id).await.task.status(), TaskStatus::Working, "mallory's cancel did nothing");
    let approval = pending(&gateway, "demo__grant_role").await;
    let (status, _) = decide(&gateway, approval["id"].as_str().expect("id"), "bob", "approve", None).await;
    assert_eq!(status, 200);
    let done = ended(&again, &task_id).await;
    let (is_error, text) = result_text(&done);
    assert!(!is_error && text.contains("frank"), "{text}");
}

/// The approvals setup, plus bucket deletions held for the caller's own confirmation.
fn confirm_setup() -> crate::util::Setup {
    let setup = setup();
    setup.policy(
        "confirm",
        "[[rule]]\nid = \"buckets-confirm\"\ntools = [\"demo__delete_bucket\"]\neffect = \"confirm\"\nreason = \"deleting a bucket cannot be undone\"\n",
    );
    setup
}

fn bucket_exists(setup: &crate::util::Setup, bucket: &str) -> bool {
    setup.sandbox("demo").join("buckets").join(bucket).is_dir()
}

async fn answer(client: &RunningService<RoleClient, TaskClient>, id: &str, response: Value) -> Result<(), rmcp::ServiceError> {
    let responses = [("airlock_confirm".to_owned(), response)].into_iter().collect();
    client.peer().update_task(UpdateTaskParams::new(id, responses)).await
}

#[tokio::test]
async fn a_confirm_hold_asks_its_caller_through_the_task_and_runs_once_confirmed() {
    let setup = confirm_setup();
    let gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;
    let handle = start(&carol, "demo__delete_bucket", json!({"bucket": "tmp-scratch"})).await;
    assert_eq!(handle["status"], "input_required", "{handle}");
    let task_id = handle["taskId"].as_str().expect("task id").to_owned();
    let message = handle["statusMessage"].as_str().unwrap_or_default();
    assert!(message.contains("tasks/update") && message.contains("ap-") && message.contains("expires at"), "{message}");

    // The question is the in-band confirmation form, under Airlock's key.
    let asked = get(&carol, &task_id).await;
    let TaskPayload::InputRequired { input_requests } = &asked.task.payload else { panic!("not asking: {asked:?}") };
    let question = serde_json::to_value(&input_requests["airlock_confirm"]).expect("json");
    assert_eq!(question["method"], "elicitation/create", "{question}");
    assert!(question["params"]["message"].as_str().unwrap_or_default().contains("tmp-scratch"), "{question}");
    assert!(bucket_exists(&setup, "tmp-scratch"), "nothing runs before the answer");

    // Nobody else answers it: another caller's update reads as an unknown task's.
    let mallory = tasks_client_as(&gateway, "mallory").await;
    let accept = json!({"action": "accept", "content": {"approve": true}});
    let theirs = answer(&mallory, &task_id, accept.clone()).await.expect_err("not mallory's task");
    let unknown = answer(&mallory, "tk-00000000000000000000000000000000", accept.clone()).await.expect_err("unknown");
    let shape = |e: rmcp::ServiceError| e.to_string().replace(&task_id, "ID").replace("tk-00000000000000000000000000000000", "ID");
    assert_eq!(shape(theirs), shape(unknown));
    assert_eq!(get(&carol, &task_id).await.task.status(), TaskStatus::InputRequired, "mallory decided nothing");

    answer(&carol, &task_id, accept.clone()).await.expect("tasks/update acks");
    let done = ended(&carol, &task_id).await;
    let (is_error, text) = result_text(&done);
    assert!(!is_error && text.contains("deleted bucket \"tmp-scratch\""), "{text}");
    assert!(!bucket_exists(&setup, "tmp-scratch"));
    // A second answer to an ended task changes nothing.
    answer(&carol, &task_id, accept).await.expect("acknowledged");

    let records = stop_and_export(gateway, &setup).await;
    assert_eq!(task_statuses(&records, &task_id), ["input_required", "working", "completed"]);
    let decided: Vec<&Value> = records.iter().filter(|r| r["kind"] == "approval_decided").collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!((decided[0]["approver"].as_str(), decided[0]["channel"].as_str()), (Some("carol"), Some("elicitation")));
    let forwarded = records.iter().filter(|r| r["kind"] == "call_forwarded" && r["tool"] == "demo__delete_bucket").count();
    assert_eq!(forwarded, 1);
}

#[tokio::test]
async fn a_declined_or_unreadable_confirmation_runs_nothing() {
    let setup = confirm_setup();
    let gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;
    let handle = start(&carol, "demo__delete_bucket", json!({"bucket": "staging-assets"})).await;
    let task_id = handle["taskId"].as_str().expect("task id").to_owned();

    let unreadable = answer(&carol, &task_id, json!({"approve": "yes please"})).await.expect_err("not an elicitation result");
    assert!(unreadable.to_string().contains("not an elicitation result"), "{unreadable}");
    assert_eq!(get(&carol, &task_id).await.task.status(), TaskStatus::InputRequired, "still asking");

    answer(&carol, &task_id, json!({"action": "decline"})).await.expect("tasks/update acks");
    let done = ended(&carol, &task_id).await;
    let (is_error, text) = result_text(&done);
    assert!(is_error && text.starts_with("Not confirmed") && text.contains("not forwarded"), "{text}");
    assert!(bucket_exists(&setup, "staging-assets"));

    // Dismissing the question cancels the hold and the task.
    let dismissed = start(&carol, "demo__delete_bucket", json!({"bucket": "staging-assets"})).await;
    let dismissed_id = dismissed["taskId"].as_str().expect("task id").to_owned();
    answer(&carol, &dismissed_id, json!({"action": "cancel"})).await.expect("tasks/update acks");
    assert_eq!(ended(&carol, &dismissed_id).await.task.status(), TaskStatus::Cancelled);
    assert!(bucket_exists(&setup, "staging-assets"));

    let records = stop_and_export(gateway, &setup).await;
    assert!(!records.iter().any(|r| r["kind"] == "call_forwarded"), "nothing was forwarded");
    assert_eq!(task_statuses(&records, &task_id), ["input_required", "working", "completed"]);
}

/// A downstream that answers every `tools/call` with a task of its own although Airlock
/// never declared task support: raw JSON-RPC over streamable HTTP (rmcp's server refuses
/// to do this, rightly). Counts the calls it got.
async fn serve_tasker() -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = calls.clone();
    let answer = move |body: axum::Json<Value>| {
        let calls = counted.clone();
        async move {
            let id = body.0["id"].clone();
            let result = match body.0["method"].as_str().unwrap_or_default() {
                _ if id.is_null() => return StatusCode::ACCEPTED.into_response(),
                "initialize" => json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "tasker", "version": "0"}}),
                "tools/list" => json!({"tools": [{"name": "slow", "description": "answers with a task",
                    "inputSchema": {"type": "object"}}]}),
                "tools/call" => {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    json!({"resultType": "task", "taskId": "remote-task-1", "status": "working",
                        "createdAt": "2026-01-01T00:00:00Z", "lastUpdatedAt": "2026-01-01T00:00:00Z", "ttlMs": 60000})
                }
                _ => return axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}})).into_response(),
            };
            ([("mcp-session-id", "tasker-1")], axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))).into_response()
        }
    };
    let router = axum::Router::new().route(
        "/mcp",
        axum::routing::post(answer).get(|| async { StatusCode::METHOD_NOT_ALLOWED }).delete(|| async { StatusCode::OK }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{address}/mcp"), calls)
}

#[tokio::test]
async fn a_downstream_task_that_cannot_be_polled_ends_naming_the_server_not_its_id() {
    let (url, calls) = serve_tasker().await;
    let setup = setup();
    setup.manifest("tasker", &format!("name = \"tasker\"\nurl = \"{url}\"\ndefault_risk = \"low\"\n"));
    setup.policy("tasker", "[[rule]]\nid = \"tasker\"\ntools = [\"tasker__slow\"]\neffect = \"allow\"\nreason = \"test\"\n");
    let gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;
    // Carol takes tasks: she gets a task of Airlock's, not the downstream's id.
    let handle = start(&carol, "tasker__slow", json!({})).await;
    let task_id = handle["taskId"].as_str().expect("id").to_owned();
    assert!(task_id.starts_with("tk-") && !handle.to_string().contains("remote-task-1"), "{handle}");
    // The tasker answers `tasks/get` with an error: Airlock cannot learn the outcome.
    let done = ended(&carol, &task_id).await;
    let TaskPayload::Failed { error } = &done.task.payload else { panic!("not failed: {done:?}") };
    let text = error["message"].as_str().unwrap_or_default();
    assert!(text.contains("'tasker'") && text.contains("stopped answering for its task"), "{text}");
    assert!(!serde_json::to_string(&done).expect("json").contains("remote-task-1"), "the downstream's task id is not handed out: {done:?}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the call did reach the downstream once");
    let unknown = carol.peer().get_task(GetTaskParams::new("remote-task-1")).await.expect_err("not a task of Airlock's");
    assert!(unknown.to_string().contains("unknown task"), "{unknown}");
}

#[tokio::test]
async fn a_waiting_task_is_re_decided_when_a_reload_denies_its_tool() {
    let setup = setup();
    let gateway = setup.http().await;
    let pid = gateway.child.id().expect("pid");
    let carol = tasks_client_as(&gateway, "carol").await;
    let handle = start(&carol, "demo__grant_role", json!({"user": "gus", "role": "admin"})).await;
    let task_id = handle["taskId"].as_str().expect("task id").to_owned();
    let approval = pending(&gateway, "demo__grant_role").await;

    setup.policy("approvals", "[[rule]]\nid = \"no-grants\"\ntools = [\"demo__grant_role\"]\neffect = \"deny\"\nreason = \"no grants this week\"\n");
    let outcome = crate::reload::hup(pid, &gateway.stderr, 1).await;
    assert!(outcome.starts_with("airlock: reloaded"), "{outcome}");
    let done = ended(&carol, &task_id).await;
    assert_eq!(done.task.status(), TaskStatus::Cancelled, "{done:?}");
    let text = done.task.task.status_message.clone().unwrap_or_default();
    assert!(text.contains("policy changed") && text.contains("no grants this week") && text.contains("not forwarded"), "{text}");
    // Cancelled by the reload: a decision now runs nothing.
    let (status, _) = decide(&gateway, approval["id"].as_str().expect("id"), "bob", "approve", None).await;
    assert_ne!(status, 200);
    let records = stop_and_export(gateway, &setup).await;
    assert!(!records.iter().any(|r| r["kind"] == "call_forwarded"), "nothing was forwarded");
}
