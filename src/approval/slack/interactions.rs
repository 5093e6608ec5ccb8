//! `POST /slack/interactions`: button clicks and the deny-reason modal.
//!
//! Order matters: the signature is checked on the raw bytes before the body is even
//! URL-decoded, so nothing unauthenticated reaches a parser. A Slack user id is only a
//! name Slack vouches for; it decides only through the `[approvals.slack] users` map.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::render::{APPROVE, DENY, DENY_MODAL, REASON, deny_modal, shows_whole};
use super::signature::{Rejection, Verifier};
use super::Slack;
use crate::approval::outbound::Secret;
use crate::approval::{ApprovalId, DecideError, Verdict};
use crate::identity::Caller;

use super::CHANNEL;

/// Why a request to `/slack/interactions` was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not proven to come from Slack, or not fresh: 401.
    #[error("{0}")]
    Unauthenticated(#[from] Rejection),
    /// Signed, but not an interaction payload: 400.
    #[error("the body is not a Slack interaction payload")]
    Malformed,
}

/// Signature checks and the Slack user map.
pub(crate) struct Handler {
    verifier: Verifier,
    users: BTreeMap<String, Caller>,
}

impl Handler {
    pub(crate) fn new(secret: &Secret, users: BTreeMap<String, Caller>) -> Handler {
        Handler { verifier: Verifier::new(secret), users }
    }

    /// Verifies, then parses `payload=<json>` out of the form body.
    pub(crate) fn verify(&self, timestamp: Option<&str>, signature: Option<&str>, body: &[u8]) -> Result<Value, Refused> {
        let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()).unwrap_or(i64::MAX);
        self.verifier.verify(timestamp, signature, body, now)?;
        let payload = url::form_urlencoded::parse(body)
            .find(|(key, _)| key == "payload")
            .map(|(_, value)| value.into_owned())
            .ok_or(Refused::Malformed)?;
        serde_json::from_str(&payload).map_err(|_| Refused::Malformed)
    }

    /// Acts on a verified payload. Every outcome a person should know about is told to
    /// them in an ephemeral message; the channel message itself changes only when the
    /// hold settles (the worker's `chat.update`).
    pub(super) async fn act(&self, slack: &Slack, payload: Value) {
        let user = payload["user"]["id"].as_str().unwrap_or_default().to_owned();
        match payload["type"].as_str() {
            Some("block_actions") => {
                let action = &payload["actions"][0];
                let Some(id) = action["value"].as_str().and_then(ApprovalId::parse) else { return };
                match action["action_id"].as_str() {
                    Some(APPROVE) => self.approve(slack, &user, &id).await,
                    Some(DENY) => self.ask_reason(slack, &user, &id, payload["trigger_id"].as_str().unwrap_or_default()).await,
                    _ => {}
                }
            }
            Some("view_submission") if payload["view"]["callback_id"] == DENY_MODAL => {
                let Some(id) = payload["view"]["private_metadata"].as_str().and_then(ApprovalId::parse) else { return };
                let reason = payload["view"]["state"]["values"][REASON][REASON]["value"].as_str().map(str::to_owned);
                self.deny(slack, &user, &id, reason).await;
            }
            _ => {}
        }
    }

    /// The Airlock caller for a Slack user, or tells them they are not mapped.
    async fn caller(&self, slack: &Slack, user: &str) -> Option<&Caller> {
        let caller = self.users.get(user);
        if caller.is_none() {
            tracing::warn!(slack_user = user, "a Slack user who is not in [approvals.slack] users tried to decide");
            let text = format!(
                "Your Slack user ({user}) is not mapped to an Airlock principal, so you cannot decide approvals. \
                 Nothing was decided. An administrator can add you under [approvals.slack] users."
            );
            slack.api.tell(&slack.channel, user, &text).await;
        }
        caller
    }

    async fn approve(&self, slack: &Slack, user: &str, id: &ApprovalId) {
        let Some(caller) = self.caller(slack, user).await else { return };
        if !self.offered_here(slack, user, id).await {
            return;
        }
        // Its message had no Approve button: nobody approves on Slack what Slack could not
        // show, whatever a signed request claims was clicked.
        if slack.broker.get(id).is_some_and(|a| !shows_whole(&a)) {
            tracing::warn!(slack_user = user, approval = %id, "refused a Slack approve for a hold whose arguments the message could not show");
            let text = format!(
                "Approval {id} was not approved: its arguments are too long for Slack to show in full, so it can only \
                 be approved on the approver page, after reading them all."
            );
            slack.api.tell(&slack.channel, user, &text).await;
            return;
        }
        let outcome = slack.broker.decide(id, caller, Verdict::Approve, None, CHANNEL).await;
        self.report(slack, user, outcome).await;
    }

    /// A deny needs a reason: check the user may decide, then open the modal (its
    /// `view_submission` comes back to `deny`).
    async fn ask_reason(&self, slack: &Slack, user: &str, id: &ApprovalId, trigger_id: &str) {
        let Some(caller) = self.caller(slack, user).await else { return };
        let Some(approval) = slack.broker.get(id) else {
            slack.api.tell(&slack.channel, user, &format!("There is no approval {id}.")).await;
            return;
        };
        if !approval.announces_on(CHANNEL) {
            slack.api.tell(&slack.channel, user, &format!("Approval {id} is not decided on Slack.")).await;
            return;
        }
        if !approval.is_pending() {
            slack.api.tell(&slack.channel, user, &format!("Approval {id} is already {}.", approval.state.as_str())).await;
            return;
        }
        if let Err(why) = approval.may_decide(caller, super::CHANNEL) {
            slack.api.tell(&slack.channel, user, &format!("You cannot decide approval {id}: {why}.")).await;
            return;
        }
        let body = serde_json::json!({"trigger_id": trigger_id, "view": deny_modal(&approval)});
        if let Err(error) = slack.api.call("views.open", &body).await {
            tracing::warn!(%error, approval = %id, "could not open the deny-reason modal");
            slack.api.tell(&slack.channel, user, "Slack would not open the reason dialog; please click Deny again.").await;
        }
    }

    async fn deny(&self, slack: &Slack, user: &str, id: &ApprovalId, reason: Option<String>) {
        let Some(caller) = self.caller(slack, user).await else { return };
        if !self.offered_here(slack, user, id).await {
            return;
        }
        let outcome = slack.broker.decide(id, caller, Verdict::Deny, reason, CHANNEL).await;
        self.report(slack, user, outcome).await;
    }

    /// Whether the hold's rule offered it on Slack; a rule that names other channels only
    /// is not decided here, whatever a signed request claims.
    async fn offered_here(&self, slack: &Slack, user: &str, id: &ApprovalId) -> bool {
        match slack.broker.get(id) {
            Some(approval) if approval.announces_on(CHANNEL) => true,
            Some(_) => {
                slack.api.tell(&slack.channel, user, &format!("Approval {id} is not decided on Slack.")).await;
                false
            }
            // Unknown ids get the broker's own answer.
            None => true,
        }
    }

    /// Tells the decider what happened when the channel message will not show it.
    async fn report(&self, slack: &Slack, user: &str, outcome: Result<crate::approval::broker::Decided, DecideError>) {
        let text = match outcome {
            // Settled: the worker's chat.update shows it to everyone.
            Ok(decided) if decided.counted && !decided.approval.is_pending() => return,
            Ok(decided) if decided.counted => format!(
                "Your approval of {} counted: {} of {} so far.",
                decided.approval.id,
                decided.approval.approvals(),
                decided.approval.quorum
            ),
            Ok(decided) => format!("You already decided approval {}; it is {}.", decided.approval.id, decided.approval.state.as_str()),
            Err(DecideError::Broker(error)) => {
                tracing::error!(%error, "the broker could not record a Slack decision");
                "Airlock could not record your decision; please try again.".to_owned()
            }
            Err(error) => format!("Your decision was not recorded: {error}."),
        };
        slack.api.tell(&slack.channel, user, &text).await;
    }
}
