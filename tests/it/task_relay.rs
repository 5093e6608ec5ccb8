//! A downstream that answers `tools/call` with a task of its own (a real rmcp server
//! with rmcp's `TaskManager`, over streamable HTTP): Airlock follows the task to its end
//! and the caller gets the real result, recorded as `call_completed`.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock, CreateTaskResult, ErrorData,
    GetTaskParams, GetTaskResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::task_manager::{TaskManager, TaskOptions};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::util::{ALLOW_ALL, Setup, TestClient, call, export, text_of};

/// Answers every call with a task that completes with "done: <args>".
#[derive(Clone, Default)]
struct Tasking {
    tasks: Arc<TaskManager>,
}

impl ServerHandler for Tasking {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tasks().build())
    }

    async fn list_tools(&self, _: Option<PaginatedRequestParams>, _: RequestContext<RoleServer>) -> Result<ListToolsResult, ErrorData> {
        let Value::Object(schema) = json!({"type": "object"}) else { unreachable!("an object literal") };
        Ok(ListToolsResult::with_all_items(vec![Tool::new("slow", "answers with a task", Arc::new(schema))]))
    }

    async fn call_tool(&self, request: CallToolRequestParams, _: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let args = serde_json::to_string(&request.arguments).unwrap_or_default();
        let task = self.tasks.spawn(TaskOptions::new().with_poll_interval_ms(100), move |_context| {
            Box::pin(async move { Ok(CallToolResult::success(vec![ContentBlock::text(format!("done: {args}"))])) })
        });
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get_task(&self, request: GetTaskParams, _: RequestContext<RoleServer>) -> Result<GetTaskResult, ErrorData> {
        self.tasks.get_task(&request.task_id).map(GetTaskResult::new)
    }

    async fn cancel_task(&self, request: CancelTaskParams, _: RequestContext<RoleServer>) -> Result<(), ErrorData> {
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
