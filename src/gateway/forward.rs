//! Forwarding one `tools/call` downstream and relaying what comes back.

// Sampling and logging are deprecated by SEP-2577; Airlock still relays them for the
// clients and servers that use them.
#![allow(deprecated)]

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode, ErrorData,
    ProgressNotificationParam, ProgressToken, ResultType,
};
use rmcp::service::RequestContext;
use serde_json::{Value, json};
use std::time::Instant;

use tracing::Instrument;

use crate::audit::{Record, RecordKind, canonical_value};
use crate::downstream::CatalogEntry;
use super::VettedTool;
use crate::identity::Caller;
use crate::policy::{ApprovalSpec, CallFacts, Decision, Effect, Subject, default_quorum};
use crate::risk::Risk;
use crate::risk::RiskSource;
use crate::telemetry::{self, Stage};

use super::Session;
use super::hold::{self, Cleared, Held, HeldCall};
use crate::approval::{elicitation, seal};
use crate::downstream::{CallOwner, CallStep, ForwardError, PendingCall, UpstreamAsk};

/// Where an approved call carries its receipt.
pub(crate) const RECEIPT_KEY: &str = "airlock/approval";

/// The pipeline for one call: identify → resolve → validate → classify → decide →
/// record → forward → record.
pub(super) async fn run(
    session: &Session,
    call_id: &str,
    mut request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let started = Instant::now();
    let gateway = &session.gateway;
    let caller = session.caller(&context)?;
    let span = tracing::Span::current();
    span.record("principal", caller.principal.as_str());
    // One form is validated, decided on, digested and forwarded: the canonical one, so the
    // downstream gets `1` for an approved `1`, never a `1.0` that digests the same.
    let args = canonical_value(&Value::Object(request.arguments.clone().unwrap_or_default()));
    if let (Some(forwarded), Value::Object(canonical)) = (request.arguments.as_mut(), &args) {
        forwarded.clone_from(canonical);
    }
    let received = Record::new(RecordKind::CallReceived)
        .principal(caller.principal.as_str())
        .session(session.id.as_str())
        .call_id(call_id)
        .tool(request.name.as_ref())
        .with_args(&args, gateway.audit.redactor());
    // One policy set decides this call, whatever a reload does meanwhile.
    let policy = gateway.policy();
    let decided = |decision: &str| {
        Record::new(RecordKind::Decision)
            .policy_sha256(policy.set.digest().set())
            .principal(caller.principal.as_str())
            .call_id(call_id)
            .tool(request.name.as_ref())
            .decision(decision)
    };

    // One catalog for the whole decision: the definition validated against is the one
    // whose fingerprint status gave the risk.
    let catalog = gateway.catalog();
    let Some(vetted) = catalog.get(&request.name) else {
        span.record("airlock.decision", "unknown_tool");
        record_all(gateway, vec![received, decided("unknown_tool")]).await?;
        // Hidden tools read the same as tools that do not exist.
        return Err(ErrorData::invalid_params(format!("unknown tool: {}", request.name), None));
    };
    let entry = &vetted.entry;
    telemetry::resolved(&span, entry.server.name(), entry.exposed.name.as_ref());
    let valid = telemetry::stage(Stage::Validate).in_scope(|| gateway.schemas.validate(&request.name, &entry.tool.input_schema, &args));
    if let Err(error) = valid {
        span.record("airlock.decision", "invalid_arguments");
        let record = decided("invalid_arguments").reason(error.to_string());
        record_all(gateway, vec![received, record]).await?;
        return Ok(refusal(format!("Invalid arguments for {}: {error}. The call was not forwarded.", request.name)));
    }
    let decide_stage = telemetry::stage(Stage::Decide);
    let Verdict { decision, risk, by } = decide_stage.in_scope(|| decide(&policy, vetted, &request.name, &args, &caller));
    let limited = over_limit(&policy, &request, &decision, &caller).instrument(decide_stage).await;
    span.record("airlock.risk", risk.as_str());
    if let Some(limited) = limited {
        span.record("airlock.decision", "limited");
        let record = decided("limited").risk(risk.as_str()).rule(limited.limit().as_str()).reason(limited.reason());
        record_all(gateway, vec![received, record]).await?;
        return Ok(refusal(format!("Refused by {}. The call was not forwarded.", limited.reason())));
    }
    span.record("airlock.decision", decision.effect.as_str());
    let mut record = decided(decision.effect.as_str()).risk(risk.as_str()).reason(decision.reason.clone());
    if let Some(rule) = &decision.winning_rule {
        record = record.rule(rule.as_str());
    }
    let forwarded = Record::new(RecordKind::CallForwarded)
        .call_id(call_id)
        .tool(request.name.as_ref())
        .detail(json!({"server": entry.server.name(), "tool": entry.tool.name.as_ref()}));
    match decision.effect {
        Effect::Allow => record_before_forwarding(gateway, vec![received, record, forwarded]).await?,
        Effect::Deny => {
            record_all(gateway, vec![received, record]).await?;
            return Ok(refusal(format!("Denied by {by}: {}. The call was not forwarded.", decision.reason)));
        }
        Effect::Confirm | Effect::Approve => {
            record_all(gateway, vec![received, record]).await?;
            let held = HeldCall {
                session: session.id.as_str(),
                call_id,
                tool: vetted,
                request: &request,
                args: &args,
                caller: &caller,
                decision: &decision,
                risk,
                by: &by,
                forwarded: forwarded.clone(),
            };
            let held_forwarded = forwarded;
            match hold::hold(gateway, held, &context).instrument(telemetry::stage(Stage::Hold)).await? {
                Held::Answer(answer) => return Ok(answer),
                Held::Deferred(approval, guard) => {
                    let call = super::tasks::Deferred {
                        call_id: call_id.to_owned(),
                        tool: vetted.clone(),
                        request,
                        args,
                        caller,
                        decision,
                        risk,
                        by,
                        forwarded: held_forwarded,
                    };
                    return super::tasks::defer(session, call, *approval, guard, context).await;
                }
                // The broker logged `call_forwarded` as it released the call.
                // Forwarded to the tool as the catalog has it now, whose fingerprint is
                // the one the approval was bound to (`hold::clear` checked).
                Held::Cleared(cleared) => {
                    span.record("airlock.approval.id", cleared.receipt.receipt.approval_id.as_str());
                    let now = cleared.tool.clone();
                    let owned = Owned { session: &session.id, children: &session.children, call_id, task: offer(&context, &caller) };
                    return forward(gateway, &now.entry, owned, request, context, started, Some(cleared)).await;
                }
            }
        }
    }

    let owned = Owned { session: &session.id, children: &session.children, call_id, task: offer(&context, &caller) };
    forward(gateway, entry, owned, request, context, started, None).await
}

/// A caller that takes tasks gets a task of Airlock's for a downstream's task.
fn offer(context: &RequestContext<RoleServer>, caller: &Caller) -> TaskMode<'static> {
    if super::tasks::wanted(context, caller) { TaskMode::Offer(caller.principal.as_str().to_owned()) } else { TaskMode::Inline }
}

/// Counts the call against the policies' rate limits. A denied call is not counted (it
/// is refused anyway), nor is the answer to our own confirmation question: that is the
/// same call, counted when it was first made. Counters that cannot count refuse it.
async fn over_limit(
    policy: &super::ActivePolicy,
    request: &CallToolRequestParams,
    decision: &Decision,
    caller: &Caller,
) -> Option<crate::policy::Refused> {
    if decision.effect == Effect::Deny || request.request_state.as_deref().is_some_and(seal::is_ours) {
        return None;
    }
    policy.limits.check(request.name.as_ref(), caller.principal.as_str(), &caller.groups).await.err()
}

/// What policy, and the fingerprint check, say about one call.
pub(super) struct Verdict {
    pub(super) decision: Decision,
    pub(super) risk: Risk,
    /// Who decided, for the caller: a rule, the fingerprint check, or the defaults.
    pub(super) by: String,
}

/// What `policy` and the fingerprint check say about a call (also what a waiting hold is
/// re-decided with after a reload).
pub(super) fn decide(policy: &super::ActivePolicy, vetted: &VettedTool, tool: &str, args: &Value, caller: &Caller) -> Verdict {
    let (risk, risk_source) = vetted.risk();
    let facts = CallFacts { subject: Subject::Tool, tool, risk, args, principal: caller.principal.as_str(), groups: &caller.groups };
    let mut decision = policy.set.decide(&facts);
    let unaccepted = matches!(risk_source, RiskSource::FingerprintChanged | RiskSource::NewTool);
    if unaccepted && decision.effect < Effect::Deny {
        // A changed tool is not what any rule was written for: no rule may wave it through,
        // and it needs what any critical call needs (an `approve` rule's quorum included).
        if decision.effect < Effect::Approve {
            decision.effect = Effect::Approve;
            decision.winning_rule = None;
            decision.reason = if risk_source == RiskSource::NewTool {
                format!("{tool} was added while the gateway ran and is not accepted yet (`airlock tools accept {tool}`)")
            } else {
                format!("{tool} changed since it was accepted (`airlock tools accept {tool}`)")
            };
        }
        let spec = decision.approval.get_or_insert_with(|| ApprovalSpec {
            quorum: 0,
            approvers: Vec::new(),
            channels: Vec::new(),
            timeout: None,
        });
        spec.quorum = spec.quorum.max(default_quorum(Risk::Critical));
    }
    let by = match &decision.winning_rule {
        Some(rule) => format!("rule `{rule}`"),
        None if unaccepted => "the tool-fingerprint check".to_owned(),
        None => "the default policy".to_owned(),
    };
    Verdict { decision, risk, by }
}

/// Which session's call this is.
pub(super) struct Owned<'a> {
    pub session: &'a str,
    pub children: &'a crate::downstream::SessionChildren,
    pub call_id: &'a str,
    /// What becomes of a task the downstream answers with.
    pub task: TaskMode<'a>,
}

/// What becomes of a downstream's task.
pub(super) enum TaskMode<'a> {
    /// Followed here to its end; the request stays open (a client without tasks).
    Inline,
    /// A task of Airlock's, for this principal, relays it; the client gets its handle.
    Offer(String),
    /// Followed here, inside this task of Airlock's (a held call's), which shows its status.
    Within(&'a super::tasks::TaskId),
}

/// Forwards an allowed call, relays what comes back, and records `call_completed` before
/// the client sees the result.
pub(super) async fn forward(
    gateway: &std::sync::Arc<super::Gateway>,
    entry: &CatalogEntry,
    owned: Owned<'_>,
    request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
    started: Instant,
    cleared: Option<Cleared>,
) -> Result<CallToolResponse, ErrorData> {
    let client_token = context.meta.get_progress_token();
    let mut downstream_request = request;
    downstream_request.name = entry.tool.name.clone();
    // rmcp moves the request's `_meta` into the context; forward the client's entries,
    // except `airlock/*`: only the gateway writes those, so a client cannot forge a receipt.
    let mut meta = context.meta.clone();
    meta.0.0.retain(|key, _| !key.starts_with("airlock/"));
    if let Some(cleared) = &cleared {
        meta.0.0.insert(RECEIPT_KEY.to_owned(), cleared.receipt.to_value());
    }
    let downstream_span = telemetry::trace::downstream(entry.server.name(), entry.tool.name.as_ref());
    telemetry::inject_downstream(&downstream_span, &mut meta.0.0);
    downstream_request.meta = Some(meta);
    // Our own confirmation state and answer are for us, not for the downstream.
    if downstream_request.request_state.as_deref().is_some_and(seal::is_ours) {
        downstream_request.request_state = cleared.as_ref().and_then(|c| c.inner_state.clone());
        if let Some(responses) = downstream_request.input_responses.as_mut() {
            responses.remove(elicitation::INPUT_KEY);
        }
        if downstream_request.input_responses.as_ref().is_some_and(|r| r.is_empty()) {
            downstream_request.input_responses = None;
        }
    }
    let Owned { session, children, call_id, task } = owned;
    let owner = CallOwner::new(session);
    let outcome = async {
        match session_server(entry, children).await {
            Ok(server) => match server.start_call(downstream_request, owner).await {
                Ok(pending) => relay(pending, client_token, &context).await,
                Err(error) => Relayed::Done(Err(error)),
            },
            Err(error) => Relayed::Done(Err(error)),
        }
    }
    .instrument(downstream_span)
    .await;
    let watch = match (&task, &outcome) {
        (TaskMode::Offer(principal), Relayed::Task(remote)) => {
            // The task's worker records `call_completed` when the downstream's task ends.
            let relayed = super::tasks::Relayed { principal: principal.clone(), tool: entry.exposed.name.to_string(), call_id: call_id.to_owned() };
            return super::tasks::relay(gateway, relayed, remote.clone(), started).await;
        }
        (TaskMode::Within(id), _) => Some(super::tasks::Watch::new(gateway, id, call_id)),
        _ => None,
    };
    let response = match outcome {
        Relayed::Done(Ok(CallToolResponse::InputRequired(asked))) if let Some(cleared) = &cleared => {
            hold::continue_later(gateway, &cleared.receipt, asked).await.map(CallToolResponse::InputRequired)
        }
        // Followed to its end here, on the connection that made it: the caller gets the
        // real result (a held call's task of Airlock's continues as the same task).
        Relayed::Task(remote) => super::task_relay::answer(remote, &context.ct, watch.as_ref()).await.map(mark_complete),
        Relayed::Done(Ok(response)) => Ok(mark_complete(response)),
        Relayed::Done(Err(error)) => forward_error(error),
        Relayed::Cancelled => Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "request cancelled by the client", None)),
    };
    // The conventions' `error.type`: `tool_error` for an `isError` result, else the JSON-RPC code.
    match &response {
        Ok(CallToolResponse::Complete(result)) if result.is_error == Some(true) => {
            tracing::Span::current().record("error.type", "tool_error");
        }
        Err(error) => {
            tracing::Span::current().record("error.type", error.code.0);
        }
        Ok(_) => {}
    }
    completed(gateway, call_id, &entry.exposed.name, response, started).await
}

/// Records `call_completed` and passes the response on: the client gets nothing the log
/// does not hold.
pub(super) async fn completed(
    gateway: &super::Gateway,
    call_id: &str,
    tool: &str,
    response: Result<CallToolResponse, ErrorData>,
    started: Instant,
) -> Result<CallToolResponse, ErrorData> {
    tracing::debug!(elapsed_us = started.elapsed().as_micros(), "call completed");
    let completed = completed_record(call_id, tool, &response, started);
    record_all(gateway, vec![completed]).await?;
    response
}

/// The connection this session's call goes to: the shared one, or the session's own for a
/// `scope = "session"` server, whose tool must have the fingerprint of the catalog entry
/// the call was decided on (the policy and any approval were for that definition).
async fn session_server(entry: &CatalogEntry, children: &crate::downstream::SessionChildren) -> Result<std::sync::Arc<crate::downstream::Server>, ForwardError> {
    let server = children.server_for(&entry.server).await?;
    if std::sync::Arc::ptr_eq(&server, &entry.server) {
        return Ok(server);
    }
    let exposed = entry.exposed.name.as_ref();
    let fingerprint = |tool: &rmcp::model::Tool| super::fingerprints::Fingerprint::of(entry.server.name(), exposed, tool);
    let expected = fingerprint(&entry.tool);
    match server.offered(entry.tool.name.as_ref()) {
        Some(tool) if fingerprint(&tool) == expected => Ok(server),
        _ => Err(ForwardError::Differs { server: entry.server.name().to_owned(), tool: exposed.to_owned() }),
    }
}

/// `call_completed`: the result's digest, whether it was an error, and how long it took.
fn completed_record(
    call_id: &str,
    tool: &str,
    response: &Result<CallToolResponse, ErrorData>,
    started: Instant,
) -> Record {
    let (result, is_error) = match response {
        Ok(CallToolResponse::Complete(result)) => (serde_json::to_value(result).unwrap_or(Value::Null), result.is_error == Some(true)),
        Ok(other) => (serde_json::to_value(rmcp::model::ServerResult::from(other.clone())).unwrap_or(Value::Null), false),
        Err(error) => (serde_json::to_value(error).unwrap_or(Value::Null), true),
    };
    Record::new(RecordKind::CallCompleted)
        .call_id(call_id)
        .tool(tool)
        .with_result(&result)
        .is_error(is_error)
        .duration_us(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// Appends `records` in order and waits until all are durable. If the log cannot take
/// them the call stops here: nothing runs that the log does not hold.
pub(super) async fn record_all(gateway: &super::Gateway, records: Vec<Record>) -> Result<(), ErrorData> {
    refuse_unrecorded(gateway.audit.append_all(records).instrument(telemetry::stage(Stage::AuditCommit)).await)
}

/// `record_all` for what a call records just before it is forwarded: durable before it
/// goes, with its checkpoint signed later, at the latest with the call's `call_completed`
/// (no answer waits on these records; `AuditLog::append_all_sign_later`).
async fn record_before_forwarding(gateway: &super::Gateway, records: Vec<Record>) -> Result<(), ErrorData> {
    refuse_unrecorded(gateway.audit.append_all_sign_later(records).instrument(telemetry::stage(Stage::AuditCommit)).await)
}

fn refuse_unrecorded<T>(appended: Result<T, crate::audit::AuditError>) -> Result<(), ErrorData> {
    if let Err(error) = appended {
        tracing::error!(%error, "audit log append failed; refusing the call");
        return Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "the audit log is unavailable; the call was not run", None));
    }
    Ok(())
}

/// A refusal the model can read: a tool result with `isError: true`.
pub(super) fn refusal(text: String) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(text)]))
}

enum Relayed {
    Done(Result<CallToolResponse, ForwardError>),
    /// The downstream answered with a task of its own.
    Task(crate::downstream::RemoteTask),
    Cancelled,
}

/// Relays progress and elicitation until the call ends or the client cancels it.
async fn relay(
    mut pending: PendingCall,
    client_token: Option<ProgressToken>,
    context: &RequestContext<RoleServer>,
) -> Relayed {
    loop {
        let step = tokio::select! {
            step = pending.next() => step,
            () = context.ct.cancelled() => {
                pending.cancel(Some("cancelled by the client".to_owned())).await;
                return Relayed::Cancelled;
            }
        };
        match step {
            CallStep::Progress(progress) => {
                // Progress only goes to a client that asked for it, under its own token.
                if let Some(token) = &client_token {
                    let mut progress: ProgressNotificationParam = progress;
                    progress.progress_token = token.clone();
                    if let Err(error) = context.peer.notify_progress(progress).await {
                        tracing::debug!(%error, "could not relay progress");
                    }
                }
            }
            CallStep::Ask(UpstreamAsk::Log(log)) => {
                if let Err(error) = context.peer.notify_logging_message(log).await {
                    tracing::debug!(%error, "could not relay a log message");
                }
            }
            CallStep::Ask(UpstreamAsk::Elicit { params, reply }) => {
                let answer = tokio::select! {
                    answer = context.peer.create_elicitation(params) => answer.map_err(|e| {
                        ErrorData::new(ErrorCode::INTERNAL_ERROR, format!("client could not answer the elicitation: {e}"), None)
                    }),
                    () = context.ct.cancelled() => {
                        pending.cancel(Some("cancelled by the client".to_owned())).await;
                        return Relayed::Cancelled;
                    }
                };
                let _ = reply.send(answer);
            }
            CallStep::Ask(UpstreamAsk::Sample { params, reply }) => {
                let answer = tokio::select! {
                    answer = context.peer.create_message(params) => answer.map_err(|e| {
                        ErrorData::new(ErrorCode::INTERNAL_ERROR, format!("client could not answer the sampling request: {e}"), None)
                    }),
                    () = context.ct.cancelled() => {
                        pending.cancel(Some("cancelled by the client".to_owned())).await;
                        return Relayed::Cancelled;
                    }
                };
                let _ = reply.send(answer);
            }
            CallStep::Done(Ok(CallToolResponse::Task(created))) => return Relayed::Task(pending.into_task(created)),
            CallStep::Done(result) => return Relayed::Done(result),
        }
    }
}

/// A legacy downstream's result carries no `resultType`; a 2026-07-28 client requires it
/// (rmcp strips it again for legacy clients).
pub(super) fn mark_complete(response: CallToolResponse) -> CallToolResponse {
    match response {
        CallToolResponse::Complete(mut result) => {
            if result.result_type.is_none() {
                result.result_type = Some(ResultType::COMPLETE);
            }
            CallToolResponse::Complete(result)
        }
        other => other,
    }
}

/// The one mapping of forwarding failures to the wire: the downstream's own JSON-RPC
/// errors pass through; Airlock's are tool errors the model can read.
fn forward_error(error: ForwardError) -> Result<CallToolResponse, ErrorData> {
    match error {
        ForwardError::Downstream(error) => Err(error),
        ForwardError::Unavailable { .. }
        | ForwardError::Lost { .. }
        | ForwardError::Differs { .. }
        | ForwardError::Unexpected { .. } => {
            Ok(CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(error.to_string())])))
        }
    }
}
