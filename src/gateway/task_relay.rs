//! A downstream that answers a forwarded `tools/call` with a task of its own
//! (extension `io.modelcontextprotocol/tasks`, which Airlock declares to downstreams).
//!
//! Owns: following that task to its end on the connection that made it (`tasks/get` on
//! the downstream's `pollIntervalMs`, bounded), `tasks/cancel` when the caller gives up,
//! and turning its end into the call's answer. A caller that takes tasks gets a task of
//! Airlock's for it (`tasks::relay`); each status the downstream reports on the way is
//! passed to that task (`tasks::Watch`), and so to the audit log.
//! Uses: `downstream::RemoteTask`, `tasks::Watch`.
//! Must not: hand the downstream's task id to a client (it is not one of Airlock's), or
//! answer before the task has ended (the caller's `call_completed` holds the real result).

use std::time::Duration;

use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock, ErrorCode, ErrorData, JsonObject, TaskPayload};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::downstream::{ForwardError, RemoteTask};

use super::tasks::Watch;

/// Polling bounds: a downstream asking for less is polled this often at most, one asking
/// for more (or nothing) no less often than the maximum.
const MIN_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(10);
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// What a downstream task came to.
enum Outcome {
    Completed(JsonObject),
    Failed(JsonObject),
    Cancelled,
    /// The connection went away, or the downstream no longer answers for the task.
    Gone(ForwardError),
    /// The caller gave up before the downstream's task ended (it was asked to cancel).
    Abandoned,
}

pub(super) fn interval(hint: Option<u64>) -> Duration {
    hint.map_or(DEFAULT_POLL, Duration::from_millis).clamp(MIN_POLL, MAX_POLL)
}

/// Follows `remote` until it ends; `cancelled` fires when the caller gives up, which
/// cancels the downstream's task too.
async fn follow(remote: &RemoteTask, cancelled: &CancellationToken, watch: Option<&Watch<'_>>) -> Outcome {
    let mut every = interval(remote.seed().poll_interval_ms);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancelled.cancelled() => {
                if let Err(error) = remote.cancel().await {
                    tracing::debug!(%error, server = remote.server(), "could not cancel a downstream task");
                }
                return Outcome::Abandoned;
            }
        }
        let task = match remote.get().await {
            Ok(task) => task,
            Err(error) => return Outcome::Gone(error),
        };
        every = interval(task.task.poll_interval_ms);
        if let Some(watch) = watch {
            let asks = match &task.payload {
                TaskPayload::InputRequired { input_requests } => Some(input_requests),
                _ => None,
            };
            watch.saw(&task.task, asks).await;
        }
        match task.payload {
            TaskPayload::Completed { result } => return Outcome::Completed(result),
            TaskPayload::Failed { error } => return Outcome::Failed(error),
            TaskPayload::Cancelled => return Outcome::Cancelled,
            // Asked of the caller through the task of Airlock's that follows this one.
            TaskPayload::InputRequired { .. } if watch.is_some() => {}
            TaskPayload::InputRequired { .. } => {
                // A caller without tasks has no `tasks/update` to answer with.
                if let Err(error) = remote.cancel().await {
                    tracing::debug!(%error, server = remote.server(), "could not cancel a downstream task");
                }
                let text = format!(
                    "{} asked for input inside its task, which Airlock relays only to a client that takes tasks; the task was cancelled.",
                    remote.server()
                );
                return Outcome::Failed(error_object(&text));
            }
            _ => {}
        }
    }
}

fn error_object(message: &str) -> JsonObject {
    let mut error = JsonObject::new();
    error.insert("code".to_owned(), Value::from(ErrorCode::INTERNAL_ERROR.0));
    error.insert("message".to_owned(), Value::from(message));
    error
}

/// Follows the downstream's task to its end and answers the call with what it came to:
/// its result, or a plain tool error saying why there is none.
pub(super) async fn answer(
    remote: RemoteTask,
    cancelled: &CancellationToken,
    watch: Option<&Watch<'_>>,
) -> Result<CallToolResponse, ErrorData> {
    tracing::debug!(server = remote.server(), task = remote.id(), "following a downstream task");
    let server = remote.server().to_owned();
    let tool_error = |text: String| Ok(CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(text)])));
    if let Some(watch) = watch {
        watch.follows(&remote);
    }
    let outcome = follow(&remote, cancelled, watch).await;
    if let Some(watch) = watch {
        watch.unfollow();
    }
    match outcome {
        Outcome::Completed(result) => match serde_json::from_value::<CallToolResult>(Value::Object(result)) {
            Ok(result) => Ok(CallToolResponse::Complete(result)),
            Err(error) => tool_error(format!("{server}'s task completed with a result Airlock could not read ({error}).")),
        },
        Outcome::Failed(error) => {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("no reason given");
            tool_error(format!("The task on {server} failed: {message}"))
        }
        Outcome::Cancelled => tool_error(format!("{server} cancelled its task; the call did not complete.")),
        // A task of Airlock's made for this call ends `failed` with this.
        Outcome::Gone(ForwardError::Downstream(error)) => Err(ErrorData::internal_error(
            format!("downstream server '{server}' stopped answering for its task ({}); the call's outcome is unknown", error.message),
            None,
        )),
        Outcome::Gone(error) => Err(ErrorData::internal_error(format!("{error}; the call's outcome is unknown"), None)),
        Outcome::Abandoned => Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "request cancelled by the client", None)),
    }
}
