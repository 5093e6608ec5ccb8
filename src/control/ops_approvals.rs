//! The `approvals_*` requests: the approvals API's own functions (`approval::api`), with
//! the caller the API would see for the same bearer token.
//!
//! Who decides is the identity of the token the CLI presents (`--token-env`), checked by
//! the gateway's authenticator exactly as on `/api/v1/approvals`; the socket peer's uid
//! only got the connection admitted. So an agent that can run the CLI as an admitted peer
//! still decides as its own token: never its own call, only where its identity is an
//! approver, and the decision is recorded on channel `api` (the token channel), so a rule
//! that names channels treats a socket decision like an API one.

use std::sync::Arc;

use serde_json::{Value, json};

use super::ops::{Token, to_value};
use super::{Refusal, RefusalCode};
use crate::approval::Verdict;
use crate::approval::api::{self, ApiError};
use crate::gateway::Gateway;
use crate::identity::Caller;

/// The route name the authenticator's throttling and logs see for socket requests.
const ROUTE: &str = "control:approvals";

fn refusal(error: &ApiError) -> Refusal {
    let code = if error.is_refused_decision() { RefusalCode::DecisionRefused } else { RefusalCode::Failed };
    let mut message = error.to_string();
    if let Some(approval) = error.approval() {
        message.push_str(&format!(" (approval {} is {})", approval.id, approval.state.as_str()));
    }
    Refusal::new(code, message)
}

async fn caller(gateway: &Gateway, token: &Token) -> Result<Caller, Refusal> {
    api::identify(gateway.authenticator(), None, ROUTE, Some(&token.authorization())).await.map_err(|e| refusal(&e))
}

pub(super) async fn list(gateway: &Arc<Gateway>, token: &Token, state: Option<&str>) -> Result<Value, Refusal> {
    let who = caller(gateway, token).await?;
    let visible = api::visible(gateway.approvals(), &who, state).map_err(|e| refusal(&e))?;
    Ok(json!({"approvals": visible}))
}

pub(super) async fn show(gateway: &Arc<Gateway>, token: &Token, id: &str) -> Result<Value, Refusal> {
    let who = caller(gateway, token).await?;
    to_value(&api::visible_one(gateway.approvals(), &who, id).map_err(|e| refusal(&e))?)
}

pub(super) async fn decide(
    gateway: &Arc<Gateway>,
    token: &Token,
    id: &str,
    verdict: Verdict,
    comment: Option<String>,
) -> Result<Value, Refusal> {
    let who = caller(gateway, token).await?;
    let decided = api::decide_as(gateway.approvals(), &who, id, verdict, comment).await.map_err(|e| refusal(&e))?;
    Ok(json!({"approval": decided.approval, "counted": decided.counted}))
}
