//! The elicitation channel, for `confirm` holds: the caller's own human answers inside
//! their MCP client.
//!
//! A 2025-11-25 client gets `elicitation/create` in form mode; a 2026-07-28 client gets
//! an `InputRequiredResult` under `INPUT_KEY` with a sealed `requestState` (see `seal`).
//! Both ask the same form: a required boolean `approve` and an optional `comment`. Only
//! `accept` with `approve: true` confirms; anything else is a no.

use rmcp::model::{
    ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema, InputRequest,
    InputRequests, InputRequiredResult,
};
use serde_json::Value;

use super::{Approval, Verdict};

/// Key of Airlock's question in `inputRequests` / `inputResponses`.
pub const INPUT_KEY: &str = "airlock_confirm";
/// Channel name recorded for decisions taken here.
pub const CHANNEL: &str = "elicitation";

/// What the person answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Decided { verdict: Verdict, comment: Option<String> },
    /// `cancel`: the person dismissed the question; the hold is cancelled.
    Dismissed,
}

/// The text people read: tool, risk, redacted arguments, digest and how long it stays open.
pub fn message(approval: &Approval) -> String {
    let args = serde_json::to_string_pretty(&approval.args).unwrap_or_else(|_| approval.args.to_string());
    let text = format!(
        "Airlock: confirm this call?\n\nTool: {tool} (server {server}, risk {risk})\nWhy: {reason}\nArguments:\n{args}\nArgument digest (HMAC-SHA256): {digest}\nApproval {id}, open until {expires}.",
        tool = approval.tool,
        server = approval.server,
        risk = approval.risk,
        reason = approval.reason,
        digest = approval.args_hmac,
        id = approval.id,
        expires = approval.expires_at(),
    );
    crate::text::for_people(&text).into_owned()
}

/// The form-mode request.
pub fn form(approval: &Approval) -> ElicitRequestParams {
    let requested_schema = ElicitationSchema::builder()
        .required_bool("approve")
        .optional_string("comment")
        .build()
        .expect("two fixed, distinct properties always make a valid schema");
    ElicitRequestParams::FormElicitationParams { meta: None, message: message(approval), requested_schema }
}

/// The 2026-07-28 form: the question under `INPUT_KEY`, and the sealed state.
pub fn input_required(approval: &Approval, request_state: String) -> InputRequiredResult {
    let mut requests = InputRequests::new();
    requests.insert(INPUT_KEY.to_owned(), InputRequest::Elicitation(ElicitRequest::new(form(approval))));
    let mut result = InputRequiredResult::from_input_requests(requests);
    result.request_state = Some(request_state);
    result
}

/// Reads an answer.
pub fn answer(result: &ElicitResult) -> Answer {
    match result.action {
        ElicitationAction::Accept => {
            let content = result.content.as_ref();
            let approved = content.and_then(|c| c.get("approve")).and_then(Value::as_bool) == Some(true);
            let comment = content.and_then(|c| c.get("comment")).and_then(Value::as_str).map(str::to_owned);
            let verdict = if approved { Verdict::Approve } else { Verdict::Deny };
            Answer::Decided { verdict, comment }
        }
        ElicitationAction::Decline => Answer::Decided { verdict: Verdict::Deny, comment: Some("declined".to_owned()) },
        _ => Answer::Dismissed,
    }
}

/// Reads the 2026-07-28 retry's answer from `inputResponses[INPUT_KEY]`.
pub fn answer_from_value(value: &Value) -> Option<Answer> {
    serde_json::from_value::<ElicitResult>(value.clone()).ok().map(|r| answer(&r))
}
