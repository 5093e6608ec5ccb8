//! Held calls as MCP tasks (extension `io.modelcontextprotocol/tasks`, SEP-2663).
//!
//! A client that declares the extension and makes a call that policy holds for approval
//! gets a task handle at once instead of a request held open. A worker waits out the hold
//! and, on approval, forwards the call through the same one way out of the hold
//! (`hold::outcome` → `Broker::consume` → `forward::forward`), so the call runs exactly
//! once with its receipt; the task then holds the downstream's result. A `confirm` hold
//! asks its caller through the task instead: status `input_required` with the question
//! under `inputRequests["airlock_confirm"]`, answered by the caller's `tasks/update`.
//!
//! An allowed call whose downstream answers with a task of its own is relayed the same
//! way (`relay`): the caller gets a task of Airlock's at once, a worker follows the
//! downstream's task (`task_relay`), and each status it reports is this task's status.
//!
//! Owns: the task store (tree `tasks` of the state database), the worker of each task,
//! the answers to `tasks/get`, `tasks/update` and `tasks/cancel`, `task_status` records.
//! Uses: `hold` and `forward` for the call itself, the broker for the approval.
//! Must not: show a task to anyone but its caller (another caller gets the answer an
//! unknown task gets), take a confirmation from anyone but its caller, offer tasks to
//! anonymous callers (they cannot be told apart), or run a call whose approval it did not
//! see settle as approved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CreateTaskResult, DetailedTask, ElicitRequest, ErrorCode,
    ErrorData, GetTaskParams, GetTaskResult, InputRequest, InputRequests, InputResponses, JsonObject, Task, TaskPayload, TaskStatus,
    UpdateTaskParams,
};
use rmcp::service::RequestContext;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::approval::elicitation::{self, INPUT_KEY};
use crate::approval::{Approval, ApprovalId, Kind, State, WaitGuard, now_ms, rfc3339};
use crate::audit::{Record, RecordKind};
use crate::identity::{AuthMethod, Caller};
use crate::policy::Decision;
use crate::risk::Risk;

use crate::downstream::RemoteTask;

use super::forward::{self, Owned, TaskMode};
use super::hold::{self, Held, HeldCall};
use super::task_relay;
use super::{Gateway, Session, VettedTool};

/// How long a task stays readable after its approval expires or it ends, whichever is
/// later: long enough for a client that slept through the decision to fetch the result.
pub const RETENTION: Duration = Duration::from_secs(3600);

const TREE: &str = "tasks";

/// What can go wrong with the task store.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The state database failed.
    #[error("task store: {0}")]
    Db(#[from] sled::Error),
    /// A stored task did not decode (or encode).
    #[error("task store: {0}")]
    Codec(#[from] serde_json::Error),
}

/// A task's id: random, so it cannot be guessed (visibility is checked anyway).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId(String);

impl TaskId {
    fn generate() -> TaskId {
        TaskId(format!("tk-{}", uuid::Uuid::new_v4().simple()))
    }

    /// The id as the client sees it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One task as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The caller that created it; nobody else sees it.
    principal: String,
    approval: String,
    tool: String,
    status: TaskStatus,
    message: Option<String>,
    created_ms: u64,
    updated_ms: u64,
    /// Forgotten after this.
    keep_until_ms: u64,
    /// `completed`: the call's result. `failed`: the JSON-RPC error.
    outcome: Option<JsonObject>,
    /// The poll hint of a relayed downstream task (bounded); else the hold's.
    #[serde(default)]
    poll_ms: Option<u64>,
    /// A relayed downstream task's open questions (`input_required`), for its caller.
    #[serde(default)]
    asks: Option<InputRequests>,
}

/// The tasks of held calls, in the state database, with the workers running now.
pub struct TaskStore {
    tree: sled::Tree,
    /// Cancels the worker of a task whose call was approved and is running.
    running: Mutex<HashMap<TaskId, CancellationToken>>,
    /// The downstream task a task of Airlock's follows now, for its caller's `tasks/update`.
    followed: Mutex<HashMap<TaskId, RemoteTask>>,
    /// Held while a task's status is read and rewritten: the caller's answer and the
    /// worker's end never overwrite each other (an ended task stays ended).
    writes: tokio::sync::Mutex<()>,
}

impl TaskStore {
    /// The store inside an open state database; forgets tasks past their retention.
    pub fn in_db(db: &sled::Db) -> Result<Self, TaskError> {
        let tree = db.open_tree(TREE)?;
        let now = now_ms();
        for entry in tree.iter() {
            let (key, value) = entry?;
            let expired = serde_json::from_slice::<Stored>(&value).map_or(true, |t| t.keep_until_ms < now);
            if expired {
                tree.remove(key)?;
            }
        }
        Ok(Self {
            tree,
            running: Mutex::new(HashMap::new()),
            followed: Mutex::new(HashMap::new()),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn get(&self, id: &str) -> Result<Option<Stored>, TaskError> {
        let Some(bytes) = self.tree.get(id)? else { return Ok(None) };
        let task: Stored = serde_json::from_slice(&bytes)?;
        Ok((task.keep_until_ms >= now_ms()).then_some(task))
    }

    async fn put(&self, id: &TaskId, task: &Stored) -> Result<(), TaskError> {
        self.tree.insert(id.as_str(), serde_json::to_vec(task)?)?;
        self.tree.flush_async().await?;
        Ok(())
    }

    /// Tasks left unfinished by an earlier run: their worker is gone.
    fn unfinished(&self) -> Result<Vec<(TaskId, Stored)>, TaskError> {
        let mut found = Vec::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            let task: Stored = serde_json::from_slice(&value)?;
            if !task.status.is_terminal() {
                found.push((TaskId(String::from_utf8_lossy(&key).into_owned()), task));
            }
        }
        Ok(found)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, CancellationToken>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn followed(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, RemoteTask>> {
        self.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether this request's client takes a task instead of a request held open. Not for
/// anonymous callers: a task is visible to its principal, and every anonymous caller has
/// the same one, so their calls stay bound to the request that made them.
pub(super) fn wanted(context: &RequestContext<RoleServer>, caller: &Caller) -> bool {
    caller.via != AuthMethod::Anonymous && context.client_capabilities().is_some_and(|c| c.supports_tasks())
}

/// A held call the task's worker owns until it settles.
pub(super) struct Deferred {
    pub call_id: String,
    pub tool: Arc<VettedTool>,
    pub request: CallToolRequestParams,
    pub args: Value,
    pub caller: Caller,
    pub decision: Decision,
    pub risk: Risk,
    pub by: String,
    pub forwarded: Record,
}

impl Deferred {
    /// The call as the hold sees it.
    fn held<'a>(&'a self, session: &'a Session) -> HeldCall<'a> {
        HeldCall {
            session: session.id.as_str(),
            call_id: &self.call_id,
            tool: &self.tool,
            request: &self.request,
            args: &self.args,
            caller: &self.caller,
            decision: &self.decision,
            risk: self.risk,
            by: &self.by,
            forwarded: self.forwarded.clone(),
        }
    }
}

/// Turns a pending hold into a task: stored and logged before the client learns its id,
/// then waited out by a worker.
pub(super) async fn defer(
    session: &Session,
    call: Deferred,
    approval: Approval,
    guard: WaitGuard,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let gateway = &session.gateway;
    let id = TaskId::generate();
    let now = now_ms();
    let status = if approval.kind == Kind::Confirm { TaskStatus::InputRequired } else { TaskStatus::Working };
    let task = Stored {
        principal: call.caller.principal.as_str().to_owned(),
        approval: approval.id.to_string(),
        tool: approval.tool.clone(),
        status,
        message: Some(waiting(gateway, &approval)),
        created_ms: now,
        updated_ms: now,
        keep_until_ms: approval.expires_ms.max(now).saturating_add(millis(RETENTION)),
        outcome: None,
        poll_ms: None,
        asks: None,
    };
    gateway.tasks.put(&id, &task).await.map_err(store_failed)?;
    forward::record_all(gateway, vec![status_record(&id, &task, &call.call_id)]).await?;
    let token = CancellationToken::new();
    gateway.tasks.running().insert(id.clone(), token.clone());
    // The worker outlives this request: it gets no progress token (nobody listens) and
    // its own cancellation, which `tasks/cancel` fires.
    let mut worker_context = context;
    worker_context.ct = token;
    worker_context.meta.0.0.remove("progressToken");
    let handle = view(gateway, &id, &task);
    tokio::spawn(work(session.clone(), id, call, approval.id, guard, worker_context));
    Ok(CallToolResponse::Task(CreateTaskResult::new(handle)))
}

/// An allowed call whose downstream answered with a task: whose it is and which call.
pub(super) struct Relayed {
    pub principal: String,
    pub tool: String,
    pub call_id: String,
}

/// Relays a downstream's task as a task of Airlock's: stored and logged before the client
/// learns its id, then followed by a worker that records `call_completed` and the end.
pub(super) async fn relay(
    gateway: &Arc<Gateway>,
    call: Relayed,
    remote: RemoteTask,
    started: Instant,
) -> Result<CallToolResponse, ErrorData> {
    let id = TaskId::generate();
    let now = now_ms();
    let seed = remote.seed();
    let task = Stored {
        principal: call.principal.clone(),
        approval: String::new(),
        tool: call.tool.clone(),
        status: TaskStatus::Working,
        message: Some(seed.status_message.clone().unwrap_or_else(|| format!("running on {}", remote.server()))),
        created_ms: now,
        updated_ms: now,
        keep_until_ms: now.saturating_add(millis(RETENTION)),
        outcome: None,
        poll_ms: Some(millis(task_relay::interval(seed.poll_interval_ms))),
        asks: None,
    };
    let stored = match gateway.tasks.put(&id, &task).await.map_err(store_failed) {
        Ok(()) => forward::record_all(gateway, vec![status_record(&id, &task, &call.call_id)]).await,
        Err(error) => Err(error),
    };
    if let Err(error) = stored {
        // Nobody could follow it: it is not left running.
        if let Err(error) = remote.cancel().await {
            tracing::debug!(%error, server = remote.server(), "could not cancel a downstream task");
        }
        return Err(error);
    }
    let token = CancellationToken::new();
    gateway.tasks.running().insert(id.clone(), token.clone());
    let handle = view(gateway, &id, &task);
    let gateway = gateway.clone();
    tokio::spawn(async move {
        let watch = Watch::new(&gateway, &id, &call.call_id);
        let response = task_relay::answer(remote, &token, Some(&watch)).await.map(forward::mark_complete);
        let response = forward::completed(&gateway, &call.call_id, &call.tool, response, started).await;
        gateway.tasks.running().remove(&id);
        if let Err(error) = finish(&gateway, &id, &call.call_id, end_of(response, token.is_cancelled(), false)).await {
            tracing::error!(%error, task = id.as_str(), "could not store the end of a task");
        }
    });
    Ok(CallToolResponse::Task(CreateTaskResult::new(handle)))
}

/// A task of Airlock's that shows the status of the downstream task it follows.
pub(super) struct Watch<'a> {
    gateway: &'a Gateway,
    id: &'a TaskId,
    call_id: &'a str,
}

impl<'a> Watch<'a> {
    pub(super) fn new(gateway: &'a Gateway, id: &'a TaskId, call_id: &'a str) -> Self {
        Watch { gateway, id, call_id }
    }

    /// This task follows `remote` now: its caller's `tasks/update` goes there.
    pub(super) fn follows(&self, remote: &RemoteTask) {
        self.gateway.tasks.followed().insert(self.id.clone(), remote.clone());
    }

    /// The downstream task has ended (or is no longer followed).
    pub(super) fn unfollow(&self) {
        self.gateway.tasks.followed().remove(self.id);
    }

    /// The downstream reported `seen`, asking `asks` if it waits on input: its status,
    /// message, questions and poll hint (bounded) become this task's, and a changed status
    /// is a `task_status` record. Its end is `finish`'s.
    pub(super) async fn saw(&self, seen: &Task, asks: Option<&InputRequests>) {
        if seen.status.is_terminal() {
            return;
        }
        let tasks = &self.gateway.tasks;
        let _one = tasks.writes.lock().await;
        let mut task = match tasks.get(self.id.as_str()) {
            Ok(Some(task)) if !task.status.is_terminal() => task,
            Ok(_) => return,
            Err(error) => return tracing::error!(%error, task = self.id.as_str(), "could not read a task"),
        };
        let poll_ms = Some(millis(task_relay::interval(seen.poll_interval_ms)));
        let message = seen.status_message.clone().or_else(|| task.message.clone());
        let asks = asks.cloned();
        let changed = task.status != seen.status;
        if !changed && task.message == message && task.poll_ms == poll_ms && task.asks == asks {
            return;
        }
        let now = now_ms();
        task.status = seen.status;
        task.message = message;
        task.poll_ms = poll_ms;
        task.asks = asks;
        task.updated_ms = now;
        task.keep_until_ms = task.keep_until_ms.max(now.saturating_add(millis(RETENTION)));
        if changed && forward::record_all(self.gateway, vec![status_record(self.id, &task, self.call_id)]).await.is_err() {
            return;
        }
        if let Err(error) = tasks.put(self.id, &task).await {
            tracing::error!(%error, task = self.id.as_str(), "could not store a task's status");
        }
    }
}

/// Waits for the hold to settle, runs the call once if it was approved, and stores the end.
async fn work(
    session: Session,
    id: TaskId,
    call: Deferred,
    approval: ApprovalId,
    guard: WaitGuard,
    context: RequestContext<RoleServer>,
) {
    let gateway = &session.gateway;
    let started = Instant::now();
    let settled = gateway.approvals().settled(&approval);
    tokio::pin!(settled);
    // As for a call held open, a reload's new policy set re-decides the waiting call.
    let mut policy = gateway.policy.subscribe();
    policy.mark_unchanged();
    let settled = loop {
        tokio::select! {
            settled = &mut settled => break settled,
            Ok(()) = policy.changed() => {
                let now = policy.borrow_and_update().clone();
                super::reload::redecide(gateway, &call.held(&session), &approval, &now).await;
            }
        }
    };
    drop(guard);
    let end = match settled {
        Ok(settled) => run_settled(&session, &id, &call, settled, context, started).await,
        Err(error) => End::failed(hold::broker_failed(error)),
    };
    gateway.tasks.running().remove(&id);
    if let Err(error) = finish(gateway, &id, &call.call_id, end).await {
        tracing::error!(%error, task = id.as_str(), "could not store the end of a task");
    }
}

/// How a task ends.
struct End {
    status: TaskStatus,
    message: Option<String>,
    outcome: Option<JsonObject>,
}

impl End {
    fn failed(error: ErrorData) -> End {
        let message = Some(error.message.to_string());
        End { status: TaskStatus::Failed, message, outcome: object(serde_json::to_value(&error).unwrap_or(Value::Null)) }
    }
}

async fn run_settled(
    session: &Session,
    id: &TaskId,
    call: &Deferred,
    settled: Approval,
    context: RequestContext<RoleServer>,
    started: Instant,
) -> End {
    let gateway = &session.gateway;
    let state = settled.state;
    let held = call.held(session);
    let cancelled = context.ct.clone();
    let response = match hold::outcome(gateway, settled, &held).await {
        Ok(Held::Answer(answer)) => Ok(answer),
        Ok(Held::Cleared(cleared)) => {
            let tool = cleared.tool.clone();
            let owned = Owned { session: &session.id, children: &session.children, call_id: &call.call_id, task: TaskMode::Within(id) };
            forward::forward(gateway, &tool.entry, owned, call.request.clone(), context, started, Some(cleared)).await
        }
        Ok(Held::Deferred(..)) => Err(ErrorData::internal_error("the hold deferred a settled approval", None)),
        Err(error) => Err(error),
    };
    end_of(response, cancelled.is_cancelled(), state == State::Cancelled)
}

/// How a task ends with the call's `response`; `cancelled`: its caller cancelled it, and
/// `hold_cancelled`: the hold's answer was a cancellation.
fn end_of(response: Result<CallToolResponse, ErrorData>, cancelled: bool, hold_cancelled: bool) -> End {
    match response {
        Ok(CallToolResponse::Complete(result)) => {
            let text = result.content.iter().find_map(|c| c.as_text().map(|t| t.text.clone()));
            let status = if hold_cancelled { TaskStatus::Cancelled } else { TaskStatus::Completed };
            let message = if result.is_error == Some(true) { text } else { Some("completed".to_owned()) };
            End { status, message, outcome: object(serde_json::to_value(&result).unwrap_or(Value::Null)) }
        }
        // Said plainly rather than relayed half-way: a task has no request to carry them.
        Ok(CallToolResponse::InputRequired(_)) => End::failed(ErrorData::internal_error(
            "the downstream asked the approved call for input, which Airlock does not relay inside a task yet; \
             make the call without task support to answer it",
            None,
        )),
        Err(_) if cancelled => End {
            status: TaskStatus::Cancelled,
            message: Some("cancelled by the client while the call ran".to_owned()),
            outcome: None,
        },
        Err(error) => End::failed(error),
        // A downstream's own task is followed inside `forward` (`TaskMode`), never returned.
        Ok(_) => End::failed(ErrorData::internal_error("unexpected answer from the downstream", None)),
    }
}

/// Stores and logs a task's end.
async fn finish(gateway: &Gateway, id: &TaskId, call_id: &str, end: End) -> Result<(), ErrorData> {
    let _one = gateway.tasks.writes.lock().await;
    let Some(mut task) = gateway.tasks.get(id.as_str()).map_err(store_failed)? else { return Ok(()) };
    let now = now_ms();
    task.status = end.status;
    task.message = end.message;
    task.outcome = end.outcome;
    task.updated_ms = now;
    task.keep_until_ms = task.keep_until_ms.max(now.saturating_add(millis(RETENTION)));
    // Logged first: the client reads nothing the log does not hold.
    forward::record_all(gateway, vec![status_record(id, &task, call_id)]).await?;
    gateway.tasks.put(id, &task).await.map_err(store_failed)
}

/// Ends the tasks an earlier run left unfinished: their worker is gone with that process
/// (the approval itself may still be pending; a new call finds it).
pub(super) async fn recover(gateway: &Gateway) {
    let unfinished = match gateway.tasks.unfinished() {
        Ok(unfinished) => unfinished,
        Err(error) => return tracing::error!(%error, "could not read unfinished tasks"),
    };
    for (id, task) in unfinished {
        let message = if task.approval.is_empty() {
            format!("the gateway restarted while this task followed the downstream's task for {}; its outcome is unknown", task.tool)
        } else {
            format!(
                "the gateway restarted while this task waited on approval {}; the call was not forwarded by this task. \
                 Make the call again to wait on the same approval.",
                task.approval
            )
        };
        let end = End::failed(ErrorData::internal_error(message, None));
        if let Err(error) = finish(gateway, &id, "", end).await {
            tracing::error!(?error, task = id.as_str(), "could not end an unfinished task");
        }
    }
}

/// `task_status`: which task, its status, and the approval it waits on (if any).
fn status_record(id: &TaskId, task: &Stored, call_id: &str) -> Record {
    let mut record = Record::new(RecordKind::TaskStatus)
        .principal(task.principal.as_str())
        .tool(task.tool.as_str())
        .detail(json!({"task_id": id.as_str(), "status": status_name(task.status), "message": task.message}));
    if !call_id.is_empty() {
        record = record.call_id(call_id);
    }
    // A relayed downstream task waits on no approval.
    if !task.approval.is_empty() {
        record = record.approval_id(task.approval.as_str());
    }
    record
}

fn status_name(status: TaskStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// The task as the wire shows it; a waiting task's message is the hold's progress now.
fn view(gateway: &Gateway, id: &TaskId, task: &Stored) -> Task {
    let live = match task.status {
        TaskStatus::Working | TaskStatus::InputRequired => ApprovalId::parse(&task.approval)
            .and_then(|a| gateway.approvals().get(&a))
            .filter(Approval::is_pending)
            .map(|a| waiting(gateway, &a)),
        _ => None,
    };
    let mut view = Task::new(id.as_str(), task.status, rfc3339(task.created_ms), rfc3339(task.updated_ms))
        .with_ttl_ms(task.keep_until_ms.saturating_sub(task.created_ms))
        .with_poll_interval_ms(task.poll_ms.unwrap_or_else(|| millis(gateway.holds.progress_every)).max(1));
    if let Some(message) = live.or_else(|| task.message.clone()) {
        view = view.with_status_message(message);
    }
    view
}

/// The hold's progress, for the status message.
fn waiting(gateway: &Gateway, approval: &Approval) -> String {
    if approval.kind == Kind::Confirm {
        return format!(
            "{tool} needs your confirmation (approval {id}): answer inputRequests[\"{INPUT_KEY}\"] with tasks/update. \
             Out of band, {how}. It expires at {at}.",
            id = approval.id,
            tool = approval.tool,
            how = crate::approval::confirm_out_of_band(approval, gateway.holds.public_url.as_deref()),
            at = approval.expires_at(),
        );
    }
    format!(
        "Waiting for approval {id} of {tool} ({have} of {need}); {how}. It expires at {at}.",
        id = approval.id,
        tool = approval.tool,
        have = approval.approvals(),
        need = approval.quorum,
        how = hold::how_to_decide(gateway, approval),
        at = approval.expires_at(),
    )
}

impl Session {
    /// The caller's own task, or the error an unknown task gets.
    fn own_task(&self, id: &str, context: &RequestContext<RoleServer>) -> Result<Stored, ErrorData> {
        let caller = self.caller(context)?;
        let task = self.gateway.tasks.get(id).map_err(store_failed)?;
        task.filter(|t| t.principal == caller.principal.as_str())
            .ok_or_else(|| ErrorData::invalid_params(format!("unknown task: {id}"), None))
    }

    /// `tasks/get`.
    pub(super) fn get_task_of(&self, params: &GetTaskParams, context: &RequestContext<RoleServer>) -> Result<GetTaskResult, ErrorData> {
        let task = self.own_task(&params.task_id, context)?;
        let id = TaskId(params.task_id.clone());
        let payload = match (task.status, task.outcome.clone()) {
            (TaskStatus::InputRequired, _) => match task.asks.clone().or_else(|| self.question(&task)) {
                Some(input_requests) => TaskPayload::InputRequired { input_requests },
                // Answered (or settled out of band) and not ended yet: the call runs.
                None => TaskPayload::Working,
            },
            (TaskStatus::Completed, Some(result)) => TaskPayload::Completed { result },
            (TaskStatus::Failed, Some(error)) => TaskPayload::Failed { error },
            (TaskStatus::Cancelled, _) => TaskPayload::Cancelled,
            (TaskStatus::Working, _) => TaskPayload::Working,
            _ => TaskPayload::Failed { error: object(json!({"code": ErrorCode::INTERNAL_ERROR.0, "message": "the task's outcome was lost"})).unwrap_or_default() },
        };
        Ok(GetTaskResult::new(DetailedTask::new(view(&self.gateway, &id, &task), payload)))
    }

    /// The confirmation question of a task waiting on its caller, while the hold is open.
    fn question(&self, task: &Stored) -> Option<InputRequests> {
        let approval = ApprovalId::parse(&task.approval).and_then(|a| self.gateway.approvals().get(&a))?;
        (approval.is_pending() && approval.kind == Kind::Confirm).then(|| {
            let mut requests = InputRequests::new();
            requests.insert(INPUT_KEY.to_owned(), InputRequest::Elicitation(ElicitRequest::new(elicitation::form(&approval))));
            requests
        })
    }

    /// `tasks/update`: the caller's answer to its confirmation, under `INPUT_KEY`, taken
    /// as the in-band elicitation answer is (only `accept` with `approve: true` confirms).
    /// Answers under other keys, or to a task not asking, are ignored, as the extension
    /// says of answers to requests that are not outstanding.
    pub(super) async fn update_task_of(&self, params: &UpdateTaskParams, context: &RequestContext<RoleServer>) -> Result<(), ErrorData> {
        let task = self.own_task(&params.task_id, context)?;
        if task.asks.is_some() {
            return self.answer_downstream(&params.task_id, params.input_responses.clone()).await;
        }
        let Some(value) = params.input_responses.get(INPUT_KEY) else { return Ok(()) };
        let Some(answer) = elicitation::answer_from_value(value) else {
            return Err(ErrorData::invalid_params(format!("inputResponses[\"{INPUT_KEY}\"] is not an elicitation result"), None));
        };
        if task.status != TaskStatus::InputRequired || self.question(&task).is_none() {
            return Ok(());
        }
        let id = TaskId(params.task_id.clone());
        let caller = self.caller(context)?;
        let approval = ApprovalId::parse(&task.approval).ok_or_else(|| ErrorData::internal_error("the task's approval id is unreadable", None))?;
        // Decided and stored as `working` under the lock the worker's end takes, so that
        // end is never overwritten; a second answer finds the task no longer asking.
        let _one = self.gateway.tasks.writes.lock().await;
        let Some(mut now) = self.gateway.tasks.get(id.as_str()).map_err(store_failed)? else { return Ok(()) };
        if now.status != TaskStatus::InputRequired {
            return Ok(());
        }
        hold::settle_answer(self.gateway.approvals(), &approval, &caller, answer).await?;
        now.status = TaskStatus::Working;
        now.message = Some(format!("answered by {}; the hold settles with the answer", caller.principal.as_str()));
        now.updated_ms = now_ms();
        forward::record_all(&self.gateway, vec![status_record(&id, &now, "")]).await?;
        self.gateway.tasks.put(&id, &now).await.map_err(store_failed)
    }

    /// `tasks/update` of a task relaying a downstream's questions: passed on, whole, to the
    /// downstream task it follows (which ignores answers to questions it did not ask).
    async fn answer_downstream(&self, id: &str, responses: InputResponses) -> Result<(), ErrorData> {
        let Some(remote) = self.gateway.tasks.followed().get(&TaskId(id.to_owned())).cloned() else { return Ok(()) };
        remote.update(responses).await.map_err(|error| match error {
            crate::downstream::ForwardError::Downstream(error) => error,
            error => ErrorData::internal_error(format!("{error}; the answer did not reach it"), None),
        })
    }

    /// `tasks/cancel`: cancels the hold (or the running call). Acknowledged for any id, as
    /// the extension requires, so it tells nobody which tasks exist.
    pub(super) async fn cancel_task_of(&self, params: &CancelTaskParams, context: &RequestContext<RoleServer>) -> Result<(), ErrorData> {
        let Ok(task) = self.own_task(&params.task_id, context) else { return Ok(()) };
        if task.status.is_terminal() {
            return Ok(());
        }
        if let Some(approval) = ApprovalId::parse(&task.approval)
            && self.gateway.approvals().get(&approval).is_some_and(|a| a.is_pending())
            && let Err(error) = self.gateway.approvals().cancel(&approval, "the task was cancelled by its caller").await
        {
            tracing::warn!(%error, approval = %approval, "could not cancel a task's approval");
        }
        if let Some(token) = self.gateway.tasks.running().get(&TaskId(params.task_id.clone())) {
            token.cancel();
        }
        Ok(())
    }
}

fn object(value: Value) -> Option<JsonObject> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The store failed: fail closed.
fn store_failed(error: TaskError) -> ErrorData {
    tracing::error!(%error, "task store failed");
    ErrorData::new(ErrorCode::INTERNAL_ERROR, format!("the task could not be stored ({error}); the call was not run"), None)
}
