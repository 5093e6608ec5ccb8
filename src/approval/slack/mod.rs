//! The Slack channel (DESIGN.md §5): a message per hold, decisions from its buttons.
//!
//! Owns: posting each new hold that announces on `slack` with `chat.postMessage`
//! (`render`), updating that message with `chat.update` once the hold settles (by any
//! channel, or expiry), and the `POST /slack/interactions` logic (`interactions`):
//! signature first (`signature`), then Approve, or Deny with a reason asked for in a
//! modal (`views.open`, answered by a `view_submission` on the same endpoint).
//! Uses: the broker's events and `decide`; `outbound` for the Web API with retries.
//! Must not: run on the call pipeline (everything here is a background task fed by the
//! broker's events, so a Slack outage delays only Slack); log the bot token or the
//! signing secret; decide for a Slack user who is not in `[approvals.slack] users`.

pub(crate) mod interactions;
pub mod render;
pub mod signature;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::outbound::{Outbound, PostError, Secret};
use super::{Approval, Broker, Event};
use crate::identity::Caller;

pub use interactions::Refused;

/// What the Slack channel needs, already checked and resolved by `serve`.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// The bot token (`xoxb-…`), from the variable named in config.
    pub bot_token: Secret,
    /// The app's signing secret, from the variable named in config.
    pub signing_secret: Secret,
    /// Channel id messages go to.
    pub channel: String,
    /// Web API base, without a trailing `/` (`https://slack.com/api`).
    pub api_base: String,
    /// Slack user id → the Airlock caller that user decides as.
    pub users: BTreeMap<String, Caller>,
    /// Base URL of the approver page, without a trailing `/`: linked from messages whose
    /// arguments do not fit (`None`: no link, the message names the CLI instead).
    pub public_url: Option<String>,
}

/// Why Slack could not be set up or called.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("Slack Web API: {0}")]
    Post(#[from] PostError),
    #[error("Slack Web API {method} answered ok=false: {error}")]
    Api { method: &'static str, error: String },
}

/// The Web API, with the bot token.
#[derive(Clone, Debug)]
struct WebApi {
    outbound: Outbound,
    base: String,
    token: Secret,
}

impl WebApi {
    /// Calls `method` with a JSON body; an answer with `ok: false` is an error (Slack
    /// answers HTTP 200 for most failures).
    async fn call(&self, method: &'static str, body: &Value) -> Result<Value, SlackError> {
        let url = format!("{}/{method}", self.base);
        let answer = self.outbound.post_json(&format!("Slack {method}"), &url, Some(&self.token), body).await;
        crate::telemetry::chat_post("slack", answer.is_ok());
        let answer = answer?;
        if answer.body["ok"] == Value::Bool(true) {
            Ok(answer.body)
        } else {
            let error = answer.body["error"].as_str().unwrap_or("no error given").to_owned();
            Err(SlackError::Api { method, error })
        }
    }

    /// Tells one user something only they see, in the approvals channel.
    async fn tell(&self, channel: &str, user: &str, text: &str) {
        let body = json!({"channel": channel, "user": user, "text": text});
        if let Err(error) = self.call("chat.postEphemeral", &body).await {
            tracing::warn!(%error, "could not send an ephemeral Slack reply");
        }
    }
}

/// The channel name in the log, in rules' `channels` and in channel notes.
pub(crate) const CHANNEL: &str = "slack";

/// The running Slack channel: the worker posting and updating messages, and the
/// interaction handler `http` mounts at `/slack/interactions`.
pub struct Slack {
    api: WebApi,
    channel: String,
    broker: Broker,
    interactions: interactions::Handler,
    page: Option<String>,
}

impl Slack {
    /// Starts the worker on `broker`'s events and returns the channel. Call inside the
    /// runtime; the worker ends when the broker does.
    pub fn start(settings: SlackSettings, broker: Broker) -> Result<Arc<Slack>, SlackError> {
        let api = WebApi { outbound: Outbound::new()?, base: settings.api_base.trim_end_matches('/').to_owned(), token: settings.bot_token };
        let interactions = interactions::Handler::new(&settings.signing_secret, settings.users);
        let page = settings.public_url.map(|u| u.trim_end_matches('/').to_owned());
        let slack = Arc::new(Slack { api, channel: settings.channel, broker, interactions, page });
        let follower = slack.clone();
        slack.broker.follow_new_holds(CHANNEL, move |approval| follower.clone().follow(approval));
        let adopter = slack.clone();
        slack.broker.follow_orphans(CHANNEL, move |approval| adopter.clone().adopt(approval));
        tokio::spawn(slack.clone().resume());
        Ok(slack)
    }

    /// Finishes messages an earlier run posted: their holds settled (a restart cancels the
    /// pending ones) while nobody was there to update them.
    async fn resume(self: Arc<Self>) {
        for (id, note) in self.broker.notes(CHANNEL).await {
            self.clone().resume_one(id, note).await;
        }
    }

    /// Finishes the message of a hold whose holding replica stopped (its lease lapsed and
    /// the hold was cancelled here).
    async fn adopt(self: Arc<Self>, approval: Approval) {
        let note = self.broker.notes(CHANNEL).await.into_iter().find(|(id, _)| *id == approval.id);
        if let Some((id, note)) = note {
            self.resume_one(id, note).await;
        }
    }

    async fn resume_one(self: Arc<Self>, id: crate::approval::ApprovalId, note: Value) {
        let channel = note["channel"].as_str().unwrap_or(&self.channel).to_owned();
        let ts = note["ts"].as_str().map(str::to_owned);
        match (self.broker.get(&id), ts) {
            // Another replica's hold: it keeps its own message up to date.
            (Some(current), _) if current.is_pending() && !self.broker.holds_here(&current) => {}
            (Some(current), Some(ts)) if current.is_pending() => {
                let events = self.broker.subscribe();
                tokio::spawn(self.clone().track(id, channel, ts, events));
            }
            (Some(current), Some(ts)) => {
                match self.api.call("chat.update", &render::settled_message(&current, &channel, &ts)).await {
                    Ok(_) => self.broker.forget(CHANNEL, &id).await,
                    Err(error) => tracing::error!(%error, approval = %id, "could not update the Slack message with the outcome"),
                }
            }
            // The run stopped while posting: the message may or may not exist, so say
            // how the hold ended in a message of its own.
            (Some(current), None) if !current.is_pending() => {
                let mut message = render::settled_message(&current, &channel, "");
                if let Some(fields) = message.as_object_mut() {
                    fields.remove("ts");
                }
                match self.api.call("chat.postMessage", &message).await {
                    Ok(_) => self.broker.forget(CHANNEL, &id).await,
                    Err(error) => tracing::error!(%error, approval = %id, "could not post the outcome to Slack"),
                }
            }
            (Some(_), None) => {}
            (None, _) => self.broker.forget(CHANNEL, &id).await,
        }
    }

    /// Posts the hold, then follows it: each counted approval short of the quorum updates
    /// the message with the tally, and settling (any channel, or expiry) replaces the
    /// buttons with the outcome.
    async fn follow(self: Arc<Self>, approval: Approval) {
        let id = approval.id.clone();
        // Subscribe before posting, so no decision made meanwhile goes unseen; note the
        // hold before posting too, so a crash in between still gets its outcome shown.
        let events = self.broker.subscribe();
        if let Err(error) = self.broker.remember(CHANNEL, &id, &json!({"channel": self.channel})).await {
            tracing::warn!(%error, approval = %id, "could not remember the Slack message");
        }
        let posted = match self.api.call("chat.postMessage", &render::request_message(&approval, &self.channel, self.page.as_deref())).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::error!(%error, approval = %id, "could not post the approval to Slack");
                return;
            }
        };
        // Update where Slack says the message is (the configured channel may be a name).
        let channel = posted["channel"].as_str().unwrap_or(&self.channel).to_owned();
        let Some(ts) = posted["ts"].as_str().map(str::to_owned) else {
            tracing::error!(approval = %id, "chat.postMessage answered without a message ts");
            return;
        };
        // Where the message is survives a restart, so the next run can show the outcome.
        if let Err(error) = self.broker.remember(CHANNEL, &id, &json!({"channel": channel, "ts": ts})).await {
            tracing::warn!(%error, approval = %id, "could not remember the Slack message");
        }
        self.track(id, channel, ts, events).await;
    }

    /// Keeps one posted message up to date until its hold settles.
    async fn track(
        self: Arc<Self>,
        id: crate::approval::ApprovalId,
        channel: String,
        ts: String,
        mut events: tokio::sync::broadcast::Receiver<Event>,
    ) {
        let mut shown_votes = 0;
        loop {
            let Some(current) = self.broker.get(&id) else { return };
            if !current.is_pending() {
                match self.api.call("chat.update", &render::settled_message(&current, &channel, &ts)).await {
                    Ok(_) => self.broker.forget(CHANNEL, &id).await,
                    Err(error) => tracing::error!(%error, approval = %id, "could not update the Slack message with the outcome"),
                }
                return;
            }
            if current.votes.len() > shown_votes {
                shown_votes = current.votes.len();
                if let Err(error) = self.api.call("chat.update", &render::progress_message(&current, &channel, &ts, self.page.as_deref())).await {
                    tracing::warn!(%error, approval = %id, "could not update the Slack message with the tally");
                }
            }
            // Wait for news of this hold; a lag or a foreign event just means re-reading.
            loop {
                match events.recv().await {
                    Ok(Event::Decided(a) | Event::Settled(a)) if a.id == id => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }

    /// Handles one `POST /slack/interactions`: verifies the signature before anything is
    /// parsed, then acknowledges at once; the decision happens on a spawned task so Slack
    /// gets its answer within its 3 s.
    pub fn receive(self: &Arc<Self>, timestamp: Option<&str>, signature: Option<&str>, body: &[u8]) -> Result<(), Refused> {
        let payload = self.interactions.verify(timestamp, signature, body)?;
        let slack = self.clone();
        tokio::spawn(async move { slack.interactions.act(&slack, payload).await });
        Ok(())
    }
}
