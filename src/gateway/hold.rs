//! The hold: a `confirm` or `approve` call waits here until the broker settles it.
//!
//! A call leaves the hold only as `Cleared` (approved, with the one receipt that approval
//! will ever give) or as an answer that says plainly why it did not run. There is no
//! other way out, so no held call executes without the decision policy demanded.

use std::time::Instant;

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorCode, ErrorData, InputRequiredResult,
    ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::RequestContext;
use serde_json::Value;

use crate::approval::elicitation::{self, Answer};
use crate::approval::seal::{self, Claims, Purpose};
use crate::approval::{
    Approval, ApprovalId, Broker, BrokerError, DecideError, HoldRequest, Kind, SignedReceipt, State, WaitGuard,
    now_ms,
};
use crate::audit::Record;
use std::sync::Arc;

use crate::identity::{AuthMethod, Caller};
use crate::policy::{Decision, Effect};
use crate::risk::Risk;

use super::forward::refusal;
use super::{Gateway, VettedTool};

/// How a call leaves the hold.
pub(super) enum Held {
    /// Approved: forward once, carrying the receipt.
    Cleared(Cleared),
    /// Not run: the answer says why (or asks the 2026-07-28 client for a confirmation).
    Answer(CallToolResponse),
    /// Still pending, for a client that takes a task: the task waits instead of the request
    /// (and, for a `confirm`, asks the caller in its `input_required` status).
    Deferred(Box<Approval>, WaitGuard),
}

/// What a released call carries downstream.
pub(super) struct Cleared {
    /// The tool as the catalog serves it now: the definition that was approved.
    pub tool: Arc<VettedTool>,
    pub receipt: SignedReceipt,
    /// The downstream's own request state, in a further round of the same execution.
    pub inner_state: Option<String>,
}

/// Everything the hold needs to know about the call.
pub(super) struct HeldCall<'a> {
    pub session: &'a str,
    pub call_id: &'a str,
    /// The tool the decision was taken on.
    pub tool: &'a Arc<VettedTool>,
    pub request: &'a CallToolRequestParams,
    pub args: &'a Value,
    pub caller: &'a Caller,
    pub decision: &'a Decision,
    pub risk: Risk,
    /// Who demanded the hold, for people ("rule `x`").
    pub by: &'a str,
    /// The `call_forwarded` record, logged by the broker as the approval is used.
    pub forwarded: Record,
}

pub(super) async fn hold(
    gateway: &Gateway,
    call: HeldCall<'_>,
    context: &RequestContext<RoleServer>,
) -> Result<Held, ErrorData> {
    let broker = gateway.approvals();
    let kind = if call.decision.effect == Effect::Confirm { Kind::Confirm } else { Kind::Approve };
    let modern = context.protocol_version().is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
    let tool = call.request.name.as_ref();

    // A 2026-07-28 client retrying with a sealed state we gave it.
    if let Some(state) = call.request.request_state.as_deref()
        && seal::is_ours(state)
    {
        return sealed_retry(gateway, &call, kind, state).await;
    }

    let (approval, waiting) = broker
        .hold(HoldRequest {
            kind,
            call_id: call.call_id,
            session: call.session,
            caller: call.caller.principal.as_str(),
            caller_via: call.caller.via,
            caller_person: call.caller.person.as_ref().map(|p| p.as_str()),
            tool,
            server: call.tool.entry.server.name(),
            risk: call.risk.as_str(),
            tool_fingerprint: call.tool.fingerprint.digest(),
            args: call.args,
            rule: call.decision.winning_rule.as_ref().map(|r| r.as_str()),
            reason: &call.decision.reason,
            spec: call.decision.approval.as_ref(),
        })
        .await
        .map_err(broker_failed)?;
    tracing::info!(approval = %approval.id, kind = kind.as_str(), "call held");
    if approval.state == State::Approved {
        // Approved out of band while no call waited (a retry of the same call).
        return clear(gateway, approval, &call).await;
    }
    // Only these two wait; the others answer at once and leave the hold open.
    match kind {
        // A task carries the question in its `input_required` status; `tasks/update` answers.
        Kind::Confirm if super::tasks::wanted(context, call.caller) => Ok(Held::Deferred(Box::new(approval), waiting)),
        Kind::Confirm if modern => {
            let nonce = broker.issue_nonce(&approval.id).await.map_err(broker_failed)?;
            let claims = Claims {
                purpose: Purpose::Confirm,
                inner: None,
                approval_id: approval.id.clone(),
                caller: approval.caller.clone(),
                tool: approval.tool.clone(),
                args_sha256: approval.args_hmac.clone(),
                expires_ms: approval.expires_ms,
                nonce,
            };
            let state = broker.sealer().seal(&claims);
            Ok(Held::Answer(CallToolResponse::InputRequired(elicitation::input_required(&approval, state))))
        }
        Kind::Confirm if context.client_capabilities().is_some_and(|c| c.elicitation.is_some()) => {
            confirm_in_client(gateway, &call, approval, waiting, context).await
        }
        Kind::Confirm if call.caller.via == AuthMethod::Anonymous => Ok(Held::Answer(refusal(format!(
            "{tool} needs your confirmation ({by}: {reason}), and this client cannot be asked (no elicitation \
             support). Without identity configured nobody can confirm out of band, so the call was not forwarded.",
            by = call.by,
            reason = call.decision.reason,
        )))),
        Kind::Confirm => Ok(Held::Answer(refusal(format!(
            "{tool} needs your confirmation ({by}: {reason}), and this client cannot be asked (no elicitation support). \
             To confirm it out of band, {how}; then make the same call again.",
            by = call.by,
            reason = call.decision.reason,
            how = crate::approval::confirm_out_of_band(&approval, gateway.holds.public_url.as_deref()),
        )))),
        Kind::Approve if super::tasks::wanted(context, call.caller) => Ok(Held::Deferred(Box::new(approval), waiting)),
        Kind::Approve => wait(gateway, &call, approval, waiting, context).await,
    }
}

/// Waits for independent approvers, with progress, until the hold settles or the
/// client cancels.
async fn wait(
    gateway: &Gateway,
    call: &HeldCall<'_>,
    approval: Approval,
    guard: WaitGuard,
    context: &RequestContext<RoleServer>,
) -> Result<Held, ErrorData> {
    let broker = gateway.approvals();
    let id = approval.id.clone();
    let token = context.meta.get_progress_token();
    let started = Instant::now();
    let mut ticks = tokio::time::interval(gateway.holds.progress_every);
    let settled = broker.settled(&id);
    tokio::pin!(settled);
    // A reload's new policy set re-decides the waiting call (`reload::redecide`).
    let mut policy = gateway.policy.subscribe();
    policy.mark_unchanged();
    let settled = loop {
        tokio::select! {
            settled = &mut settled => break settled.map_err(broker_failed)?,
            Ok(()) = policy.changed() => {
                let now = policy.borrow_and_update().clone();
                super::reload::redecide(gateway, call, &id, &now).await;
            }
            _ = ticks.tick() => {
                if let Some(token) = &token
                    && let Some(current) = broker.get(&id)
                {
                    let message = format!(
                        "Waiting for approval {id} of {tool} ({have} of {need}); {how}",
                        tool = current.tool,
                        have = current.approvals(),
                        need = current.quorum,
                        how = how_to_decide(gateway, &current),
                    );
                    let progress = ProgressNotificationParam::new(token.clone(), started.elapsed().as_secs_f64())
                        .with_message(message);
                    if let Err(error) = context.peer.notify_progress(progress).await {
                        tracing::debug!(%error, "could not send hold progress");
                    }
                }
            }
            () = context.ct.cancelled() => return Err(client_cancelled(broker, guard, &id).await),
        }
    };
    drop(guard);
    outcome(gateway, settled, call).await
}

/// The client gave up: stop waiting, and cancel the approval unless a retry of the same
/// call still waits on it.
async fn client_cancelled(broker: &Broker, guard: WaitGuard, id: &ApprovalId) -> ErrorData {
    drop(guard);
    if let Err(error) = broker.cancel_if_abandoned(id, "cancelled by the client").await {
        tracing::error!(%error, approval = %id, "could not cancel the approval");
    }
    ErrorData::new(ErrorCode::INTERNAL_ERROR, "request cancelled by the client", None)
}

/// Asks the caller's own human through `elicitation/create` (2025-11-25 clients).
async fn confirm_in_client(
    gateway: &Gateway,
    call: &HeldCall<'_>,
    approval: Approval,
    guard: WaitGuard,
    context: &RequestContext<RoleServer>,
) -> Result<Held, ErrorData> {
    let broker = gateway.approvals();
    let id = approval.id.clone();
    let answered = tokio::select! {
        answer = context.peer.create_elicitation(elicitation::form(&approval)) => answer,
        // Expiry (or a decision through another channel) ends the question.
        settled = broker.settled(&id) => {
            drop(guard);
            return outcome(gateway, settled.map_err(broker_failed)?, call).await;
        }
        () = context.ct.cancelled() => return Err(client_cancelled(broker, guard, &id).await),
    };
    drop(guard);
    let answer = match answered {
        Ok(result) => elicitation::answer(&result),
        Err(error) => {
            tracing::warn!(%error, approval = %id, "the client could not answer the confirmation");
            Answer::Dismissed
        }
    };
    settle_answer(broker, &id, call.caller, answer).await?;
    let settled = broker.get(&id).ok_or_else(|| broker_failed(BrokerError::NotFound(id.clone())))?;
    outcome(gateway, settled, call).await
}

/// A 2026-07-28 retry: the sealed state must be ours, unaltered, unexpired, unused, and
/// for exactly this caller, tool and argument digest. It answers our confirmation, or
/// continues an approved execution whose downstream asked for input.
async fn sealed_retry(gateway: &Gateway, call: &HeldCall<'_>, kind: Kind, state: &str) -> Result<Held, ErrorData> {
    let broker = gateway.approvals();
    let tool = call.request.name.as_ref();
    let refused = |why: String| Ok(Held::Answer(refusal(format!("Confirmation refused: {why}. The call was not forwarded."))));
    let claims = match broker.sealer().open(state, now_ms()) {
        Ok(claims) => claims,
        Err(error) => return refused(error.to_string()),
    };
    let digest = gateway.audit.redactor().digest(call.args).to_string();
    if claims.caller != call.caller.principal.as_str() || claims.tool != tool || claims.args_sha256 != digest {
        return refused("the request state belongs to another caller, tool or arguments".to_owned());
    }
    if !broker.redeem_nonce(&claims.approval_id, &claims.nonce).await.map_err(broker_failed)? {
        return refused("the request state was already used".to_owned());
    }
    match claims.purpose {
        Purpose::Continue => {
            // A tool that changed since the approval is not the tool people approved.
            let now = call.tool.fingerprint.digest().to_string();
            if broker.get(&claims.approval_id).is_none_or(|a| a.tool_fingerprint != now) {
                return refused("the tool changed since the call was approved".to_owned());
            }
            let receipt = broker
                .continuation_receipt(&claims.approval_id, call.call_id, call.forwarded.clone(), call.args)
                .await
                .map_err(broker_failed)?;
            return Ok(Held::Cleared(Cleared { tool: call.tool.clone(), receipt, inner_state: claims.inner }));
        }
        Purpose::Confirm if kind != Kind::Confirm => {
            return refused("the policy now asks for independent approval, not a confirmation".to_owned());
        }
        Purpose::Confirm => {}
    }
    let answer = call
        .request
        .input_responses
        .as_ref()
        .and_then(|responses| responses.get(elicitation::INPUT_KEY))
        .and_then(|value| elicitation::answer_from_value(&serde_json::to_value(value).ok()?));
    let Some(answer) = answer else {
        broker.cancel(&claims.approval_id, "the retry carried no answer").await.map_err(broker_failed)?;
        return refused(format!("the retry carried no answer under inputResponses[\"{}\"]", elicitation::INPUT_KEY));
    };
    settle_answer(broker, &claims.approval_id, call.caller, answer).await?;
    let settled = broker.get(&claims.approval_id).ok_or_else(|| broker_failed(BrokerError::NotFound(claims.approval_id.clone())))?;
    outcome(gateway, settled, call).await
}

/// Applies the caller's answer to their own confirmation.
pub(super) async fn settle_answer(broker: &Broker, id: &ApprovalId, caller: &Caller, answer: Answer) -> Result<(), ErrorData> {
    match answer {
        Answer::Decided { verdict, comment } => {
            match broker.decide(id, caller, verdict, comment, elicitation::CHANNEL).await {
                // Expired or already settled: the outcome reports the current state.
                Ok(_) | Err(DecideError::Expired(_) | DecideError::Settled(_)) => Ok(()),
                Err(DecideError::Broker(error)) => Err(broker_failed(error)),
                Err(error) => Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, error.to_string(), None)),
            }
        }
        Answer::Dismissed => {
            broker.cancel(id, "the confirmation was dismissed").await.map_err(broker_failed)?;
            Ok(())
        }
    }
}

/// The answer for a settled hold.
pub(super) async fn outcome(gateway: &Gateway, approval: Approval, call: &HeldCall<'_>) -> Result<Held, ErrorData> {
    let id = &approval.id;
    let tool = &approval.tool;
    let text = match approval.state {
        State::Approved => return clear(gateway, approval, call).await,
        State::Pending => format!("Approval {id} for {tool} is still pending. The call was not forwarded."),
        State::Denied => {
            let (who, comment) = approval
                .denial()
                .map(|v| (format!("{} (via {})", v.approver, v.channel), v.comment.clone()))
                .unwrap_or_else(|| ("an approver".to_owned(), None));
            let comment = comment.map(|c| format!(": \"{c}\"")).unwrap_or_default();
            if approval.kind == Kind::Confirm {
                format!("Not confirmed: {tool} was declined by {who}{comment}. Approval {id}; the call was not forwarded.")
            } else {
                format!("Denied by {who}{comment}. Approval {id} for {tool}; the call was not forwarded.")
            }
        }
        State::Expired => format!(
            "Approval {id} for {tool} ({reason}) expired at {at} without a decision ({have} of {need} approvals). \
             The call was not forwarded; making it again asks again.",
            reason = approval.reason,
            at = approval.expires_at(),
            have = approval.approvals(),
            need = approval.quorum,
        ),
        State::Cancelled => format!(
            "Approval {id} for {tool} was cancelled ({why}). The call was not forwarded.",
            why = approval.settled_reason.as_deref().unwrap_or("no reason given"),
        ),
    };
    Ok(Held::Answer(refusal(text)))
}

/// Takes the approval's one execution, for the tool the catalog serves now, and only when
/// that is the definition the approval is bound to: a tool that changed or went away while
/// the call waited cancels the approval instead.
async fn clear(gateway: &Gateway, approval: Approval, call: &HeldCall<'_>) -> Result<Held, ErrorData> {
    let broker = gateway.approvals();
    let name = call.request.name.as_ref();
    let now = gateway.catalog().get(name).cloned();
    let what = if now.is_some() { "changed" } else { "was removed" };
    let changed = format!("cancelled: tool {name} {what} while the call waited; a new call needs a new approval");
    let consumed =
        broker.consume(&approval.id, call.call_id, call.forwarded.clone(), now.as_ref().map(|t| t.fingerprint.digest()), &changed, call.args);
    match consumed.await {
        Ok(receipt) => match now {
            Some(tool) => Ok(Held::Cleared(Cleared { tool, receipt, inner_state: None })),
            // Unreachable: without a current tool `consume` cancels; fail closed anyway.
            None => Ok(Held::Answer(refusal(format!("{changed}. The call was not forwarded.")))),
        },
        Err(BrokerError::ToolChanged(id)) => {
            tracing::warn!(approval = %id, tool = name, "tool changed while its call waited; approval cancelled");
            Ok(Held::Answer(refusal(format!(
                "Approval {id} {changed}. The call was not forwarded."
            ))))
        }
        Err(BrokerError::NotUsable { id, .. }) => Ok(Held::Answer(refusal(format!(
            "Approval {id} for {} was already used by another call; an approval authorises one execution. \
             Make the call again to ask for a new approval. The call was not forwarded.",
            approval.tool
        )))),
        Err(error) => Err(broker_failed(error)),
    }
}

/// A downstream asked an approved call for input: seal its state inside ours, so the
/// client's retry continues this execution instead of asking people again.
pub(super) async fn continue_later(
    gateway: &Gateway,
    receipt: &SignedReceipt,
    mut asked: InputRequiredResult,
) -> Result<InputRequiredResult, ErrorData> {
    let broker = gateway.approvals();
    let id = &receipt.receipt.approval_id;
    let approval = broker.get(id).ok_or_else(|| broker_failed(BrokerError::NotFound(id.clone())))?;
    let nonce = broker.issue_nonce(id).await.map_err(broker_failed)?;
    let claims = Claims {
        purpose: Purpose::Continue,
        approval_id: id.clone(),
        caller: approval.caller,
        tool: approval.tool,
        args_sha256: approval.args_hmac,
        // A round of the same execution may take as long as a person needs to answer.
        expires_ms: now_ms().saturating_add(u64::try_from(gateway.holds.continue_within.as_millis()).unwrap_or(u64::MAX)),
        nonce,
        inner: asked.request_state.take(),
    };
    asked.request_state = Some(broker.sealer().seal(&claims));
    Ok(asked)
}

/// Where a person can decide, for messages.
pub(super) fn how_to_decide(gateway: &Gateway, approval: &Approval) -> String {
    let id = &approval.id;
    let mut ways = Vec::new();
    // Only the ways the rule's `channels` allow (the page also serves Teams' links).
    if let Some(url) = &gateway.holds.public_url
        && (approval.announces_on("web") || approval.announces_on("teams"))
    {
        ways.push(format!("at {url}/approvals/{id}"));
    }
    if approval.announces_on("api") {
        let served = if gateway.holds.public_url.is_some() { "" } else { " (this needs `airlock serve --http`)" };
        ways.push(format!("with `airlock approvals approve {id}`{served}"));
    }
    if approval.kind == Kind::Approve && approval.announces_on("slack") && !approval.channels.is_empty() {
        ways.push("in Slack".to_owned());
    }
    match ways.as_slice() {
        [] => format!("decide {id} through the channels its rule names ({})", approval.channels.join(", ")),
        [one] => format!("decide {one}"),
        [first @ .., last] => format!("decide {} or {last}", first.join(", ")),
    }
}

/// The broker could not do its job: fail closed.
pub(super) fn broker_failed(error: BrokerError) -> ErrorData {
    tracing::error!(%error, "approval broker failed; refusing the call");
    ErrorData::new(ErrorCode::INTERNAL_ERROR, format!("the approval could not be recorded ({error}); the call was not run"), None)
}
