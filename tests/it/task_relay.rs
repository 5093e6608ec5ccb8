//! A downstream that answers `tools/call` with a task of its own (a real rmcp server
//! with rmcp's `TaskManager`, over streamable HTTP): a client without tasks gets the real
//! result of a request held open; a client with tasks gets a task of Airlock's at once,
//! visible to it alone, whose cancel reaches the downstream's task; statuses are logged.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock, CreateTaskResult, ErrorData,
    GetTaskParams, GetTaskResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::model::{ElicitRequest, ElicitRequestParams, ElicitationSchema, InputRequest, TaskPayload, TaskStatus, UpdateTaskParams};
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::tasks::{ended, get, result_text, start, task_statuses, tasks_client_as, unseen_by};
use crate::util::{ALLOW_ALL, Setup, TestClient, call, export, text_of};

/// Answers every call with a task: `slow` completes with "done: <args>", `hang` runs
/// until it is cancelled. Keeps the ids it was asked to cancel.
#[derive(Clone, Default)]
struct Tasking {
    tasks: Arc<TaskManager>,
    cancels: Arc<Mutex<Vec<String>>>,
}

impl ServerHandler for Tasking {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tasks().build())
    }

    async fn list_tools(&self, _: Option<PaginatedRequestParams>, _: RequestContext<RoleServer>) -> Result<ListToolsResult, ErrorData> {
        let Value::Object(schema) = json!({"type": "object"}) else { unreachable!("an object literal") };
        let schema = Arc::new(schema);
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("slow", "answers with a task", schema.clone()),
            Tool::new("hang", "answers with a task that runs until cancelled", schema.clone()),
            Tool::new("ask", "answers with a task that asks for a name", schema),
        ]))
    }

    async fn call_tool(&self, request: CallToolRequestParams, _: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let args = serde_json::to_string(&request.arguments).unwrap_or_default();
        let hang = request.name == "hang";
        let ask = request.name == "ask";
        let task = self.tasks.spawn(TaskOptions::new().with_poll_interval_ms(100), move |context| {
            Box::pin(async move {
                if ask {
                    let schema = ElicitationSchema::builder().required_string("name").build().expect("a schema");
                    let question = ElicitRequestParams::FormElicitationParams { meta: None, message: "your name?".to_owned(), requested_schema: schema };
                    let answer = context.request_input("name", InputRequest::Elicitation(ElicitRequest::new(question))).await?;
                    let name = answer["content"]["name"].as_str().unwrap_or("nobody").to_owned();
                    return Ok(CallToolResult::success(vec![ContentBlock::text(format!("hello {name}"))]));
                }
                if hang {
                    context.cancelled().await;
                    return Err(TaskExit::Cancelled);
                }
                Ok(CallToolResult::success(vec![ContentBlock::text(format!("done: {args}"))]))
            })
        });
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get_task(&self, request: GetTaskParams, _: RequestContext<RoleServer>) -> Result<GetTaskResult, ErrorData> {
        self.tasks.get_task(&request.task_id).map(GetTaskResult::new)
    }

    async fn update_task(&self, request: UpdateTaskParams, _: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.tasks.update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(&self, request: CancelTaskParams, _: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.cancels.lock().unwrap().push(request.task_id.clone());
        self.tasks.cancel_task(&request.task_id)
    }
}

async fn serve(server: Tasking) -> String {
    crate::util::serve_http(server).await
}

#[tokio::test]
async fn a_downstream_task_is_followed_and_a_client_without_tasks_gets_the_final_result() {
    let url = serve(Tasking::default()).await;
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n");
    setup.manifest("tasking", &format!("name = \"tasking\"\nurl = \"{url}\"\ndefault_risk = \"low\"\n"));
    setup.policy("allow-all", ALLOW_ALL);
    let mut gateway = setup.http().await;
    let client = gateway.client(TestClient::new()).await;
    let result = client.call_tool(call("tasking__slow", json!({"n": 7}))).await.expect("the final result");
    let text = text_of(&result);
    assert!(result.is_error != Some(true) && text.contains("done:") && text.contains("\"n\":7"), "{text}");
    drop(client);
    let _ = gateway.child.kill().await;
    let records = export(&setup.data_dir());
    let completed: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call_completed" && r["tool"] == "tasking__slow").collect();
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(completed[0]["is_error"], false, "{}", completed[0]);
}

/// Callers with bearer tokens (carol, mallory, ...), the tasking server, its tools allowed.
fn setup_with_people(url: &str) -> Setup {
    let setup = crate::approvals_api::setup();
    setup.manifest("tasking", &format!("name = \"tasking\"\nurl = \"{url}\"\ndefault_risk = \"low\"\n"));
    setup.policy("tasking", "[[rule]]\nid = \"tasking\"\ntools = [\"tasking__*\"]\neffect = \"allow\"\nreason = \"test\"\n");
    setup
}

fn log_verifies(setup: &Setup) {
    let dir = setup.data_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["log", "verify", "--data-dir", dir.to_str().expect("utf-8")])
        .env("AIRLOCK_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run airlock");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_task_client_gets_a_task_of_airlocks_that_completes_with_the_real_result_and_only_it_sees() {
    let downstream = Tasking::default();
    let url = serve(downstream.clone()).await;
    let setup = setup_with_people(&url);
    let mut gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;
    let handle = start(&carol, "tasking__slow", json!({"n": 7})).await;
    let task_id = handle["taskId"].as_str().expect("id").to_owned();
    assert!(task_id.starts_with("tk-"), "{handle}");
    assert!(downstream.tasks.get_task(&task_id).is_err(), "the handle is Airlock's id, not the downstream's");

    // Another caller gets the answer an unknown task gets, and its cancel does nothing.
    unseen_by(&gateway, "mallory", &task_id).await;

    let done = ended(&carol, &task_id).await;
    let (is_error, text) = result_text(&done);
    assert!(!is_error && text.contains("done:") && text.contains("\"n\":7"), "{text}");
    assert!(downstream.cancels.lock().unwrap().is_empty(), "mallory's cancel reached nothing");
    let polled = get(&carol, &task_id).await;
    assert!(polled.task.task.poll_interval_ms.is_some_and(|ms| ms >= 100), "the downstream's hint, bounded: {polled:?}");
    drop(carol);
    let _ = gateway.child.kill().await;
    let records = export(&setup.data_dir());
    assert_eq!(task_statuses(&records, &task_id), ["working", "completed"]);
    let completed: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call_completed" && r["tool"] == "tasking__slow").collect();
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(completed[0]["is_error"], false, "{}", completed[0]);
    log_verifies(&setup);
}

#[tokio::test]
async fn cancelling_the_task_of_airlocks_cancels_the_downstreams_task() {
    let downstream = Tasking::default();
    let url = serve(downstream.clone()).await;
    let setup = setup_with_people(&url);
    let mut gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;
    let handle = start(&carol, "tasking__hang", json!({})).await;
    let task_id = handle["taskId"].as_str().expect("id").to_owned();
    assert_eq!(get(&carol, &task_id).await.task.status(), TaskStatus::Working);
    carol.peer().cancel_task(CancelTaskParams::new(&task_id)).await.expect("cancel answers");
    let done = ended(&carol, &task_id).await;
    assert_eq!(done.task.status(), TaskStatus::Cancelled, "{done:?}");
    let cancels = downstream.cancels.lock().unwrap().clone();
    assert_eq!(cancels.len(), 1, "the cancel reached the downstream once: {cancels:?}");
    // The downstream's task ends cancelled (cooperatively, so it is polled for).
    let mut theirs = downstream.tasks.get_task(&cancels[0]).expect("the downstream's task");
    for _ in 0..100 {
        if theirs.status().is_terminal() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        theirs = downstream.tasks.get_task(&cancels[0]).expect("the downstream's task");
    }
    assert_eq!(theirs.status(), TaskStatus::Cancelled, "{theirs:?}");
    drop(carol);
    let _ = gateway.child.kill().await;
    let records = export(&setup.data_dir());
    assert_eq!(task_statuses(&records, &task_id), ["working", "cancelled"]);
    let completed: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call_completed" && r["tool"] == "tasking__hang").collect();
    assert!(completed.iter().all(|r| r["is_error"] == true), "nothing completed: {completed:?}");
    log_verifies(&setup);
}

#[tokio::test]
async fn a_downstream_tasks_question_is_asked_through_the_task_of_airlocks_and_answered_with_tasks_update() {
    let downstream = Tasking::default();
    let url = serve(downstream.clone()).await;
    let setup = setup_with_people(&url);
    let mut gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;
    let handle = start(&carol, "tasking__ask", json!({})).await;
    let task_id = handle["taskId"].as_str().expect("id").to_owned();
    // Polled until the question is relayed (the limit is a hang guard).
    let mut asked = get(&carol, &task_id).await;
    for _ in 0..100 {
        if asked.task.status() != TaskStatus::Working {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        asked = get(&carol, &task_id).await;
    }
    let TaskPayload::InputRequired { input_requests } = &asked.task.payload else { panic!("not asking: {asked:?}") };
    let question = serde_json::to_value(&input_requests["name"]).expect("json");
    assert_eq!(question["params"]["message"], "your name?", "{question}");

    let responses = |name: &str| [("name".to_owned(), json!({"action": "accept", "content": {"name": name}}))].into_iter().collect();
    let mallory = tasks_client_as(&gateway, "mallory").await;
    mallory.peer().update_task(UpdateTaskParams::new(&task_id, responses("mallory"))).await.expect_err("not mallory's task");
    carol.peer().update_task(UpdateTaskParams::new(&task_id, responses("carol"))).await.expect("tasks/update acks");
    let done = ended(&carol, &task_id).await;
    let (is_error, text) = result_text(&done);
    assert!(!is_error && text == "hello carol", "{text}");
    drop((carol, mallory));
    let _ = gateway.child.kill().await;
    let records = export(&setup.data_dir());
    let statuses = task_statuses(&records, &task_id);
    // Whether a poll saw the downstream `working` again between the answer and its end
    // depends on timing; the rest does not.
    assert_eq!(statuses[..2], ["working", "input_required"], "{statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("completed"), "{statuses:?}");
    log_verifies(&setup);
}

#[tokio::test]
async fn a_held_calls_task_continues_as_the_same_task_through_the_downstreams_question() {
    let downstream = Tasking::default();
    let url = serve(downstream.clone()).await;
    let setup = crate::approvals_api::setup();
    setup.manifest("tasking", &format!("name = \"tasking\"\nurl = \"{url}\"\ndefault_risk = \"low\"\n"));
    setup.policy(
        "tasking",
        "[[rule]]\nid = \"asks-need-an-sre\"\ntools = [\"tasking__ask\"]\neffect = \"approve\"\napprovers = [\"group:sre\"]\nquorum = 1\nreason = \"test\"\n",
    );
    let mut gateway = setup.http().await;
    let carol = tasks_client_as(&gateway, "carol").await;
    let handle = start(&carol, "tasking__ask", json!({})).await;
    let task_id = handle["taskId"].as_str().expect("id").to_owned();
    let approval = crate::approvals_api::pending(&gateway, "tasking__ask").await;
    let (status, _) = crate::approvals_api::decide(&gateway, approval["id"].as_str().expect("id"), "bob", "approve", None).await;
    assert_eq!(status, 200);
    // Polled until the downstream's question is relayed (the limit is a hang guard).
    let mut asked = get(&carol, &task_id).await;
    for _ in 0..100 {
        if matches!(asked.task.payload, TaskPayload::InputRequired { .. }) || asked.task.status().is_terminal() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        asked = get(&carol, &task_id).await;
    }
    let TaskPayload::InputRequired { input_requests } = &asked.task.payload else { panic!("not asking: {asked:?}") };
    assert!(input_requests.contains_key("name"), "{input_requests:?}");
    let responses = [("name".to_owned(), json!({"action": "accept", "content": {"name": "carol"}}))].into_iter().collect();
    carol.peer().update_task(UpdateTaskParams::new(&task_id, responses)).await.expect("tasks/update acks");
    let done = ended(&carol, &task_id).await;
    let (is_error, text) = result_text(&done);
    assert!(!is_error && text == "hello carol", "{text}");
    drop(carol);
    let _ = gateway.child.kill().await;
    let records = export(&setup.data_dir());
    let statuses = task_statuses(&records, &task_id);
    assert_eq!(statuses.first().map(String::as_str), Some("working"), "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "input_required"), "{statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("completed"), "{statuses:?}");
    log_verifies(&setup);
}
