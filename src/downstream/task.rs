//! A task a downstream made of one forwarded `tools/call` (extension
//! `io.modelcontextprotocol/tasks`), on the connection that made it: polled, answered
//! and cancelled there, never on a later connection, where the id means nothing.

use rmcp::RoleClient;
use rmcp::model::{CancelTaskParams, CreateTaskResult, DetailedTask, GetTaskParams, InputResponses, Task, UpdateTaskParams};
use rmcp::service::{Peer, ServiceError};

use super::call::{ForwardError, PendingCall};

/// A downstream's task, bound to the connection it was created on. Its id is the
/// downstream's: it must never reach a client as if it were one of Airlock's.
#[derive(Clone)]
pub struct RemoteTask {
    server: String,
    peer: Peer<RoleClient>,
    seed: Task,
}

impl PendingCall {
    /// The downstream answered this call with a task: follow it on the same connection.
    pub fn into_task(self, created: CreateTaskResult) -> RemoteTask {
        RemoteTask { server: self.server_name().to_owned(), peer: self.peer().clone(), seed: created.task }
    }
}

impl RemoteTask {
    /// The downstream server's name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The downstream's id of the task (for the audit log, not for clients).
    pub fn id(&self) -> &str {
        &self.seed.task_id
    }

    /// The task as the downstream first described it.
    pub fn seed(&self) -> &Task {
        &self.seed
    }

    /// `tasks/get`.
    pub async fn get(&self) -> Result<DetailedTask, ForwardError> {
        let params = GetTaskParams::new(self.id());
        self.peer.get_task(params).await.map(|result| result.task).map_err(|e| self.failed("tasks/get", e))
    }

    /// `tasks/update`: the caller's answers to the task's `inputRequests`.
    pub async fn update(&self, responses: InputResponses) -> Result<(), ForwardError> {
        self.peer.update_task(UpdateTaskParams::new(self.id(), responses)).await.map_err(|e| self.failed("tasks/update", e))
    }

    /// `tasks/cancel` (cooperative: the task may still end otherwise).
    pub async fn cancel(&self) -> Result<(), ForwardError> {
        self.peer.cancel_task(CancelTaskParams::new(self.id())).await.map_err(|e| self.failed("tasks/cancel", e))
    }

    fn failed(&self, request: &'static str, error: ServiceError) -> ForwardError {
        let server = self.server.clone();
        match error {
            ServiceError::McpError(error) => ForwardError::Downstream(error),
            ServiceError::UnexpectedResponse => ForwardError::Unexpected { server, request },
            _ if self.peer.is_transport_closed() => ForwardError::Lost { server, detail: "connection closed".to_owned() },
            error => ForwardError::Lost { server, detail: error.to_string() },
        }
    }
}
