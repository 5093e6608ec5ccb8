//! The Microsoft Teams channel (DESIGN.md §5): Adaptive Cards to a Workflows webhook.
//!
//! Owns: one card (Adaptive Card 1.5) per hold that announces on `teams`, with an
//! `Action.OpenUrl` to `{public_url}/approvals/{id}`, and a second card with the outcome
//! once the hold settles (by any channel, or expiry).
//! Uses: the broker's events; `outbound` for the POST with retries.
//! Must not: decide anything (a Workflows webhook cannot call back; deciding happens on
//! the signed-in approver page, never on a GET a link scanner could follow); log the
//! webhook URL, which is a credential; run on the call pipeline.

use std::sync::Arc;

use serde_json::{Value, json};

use super::outbound::{Outbound, PostError, Secret};
use super::shown::Shown;
use super::{Approval, Broker, State, Verdict};

/// What the Teams channel needs, already checked and resolved by `serve`.
#[derive(Debug, Clone)]
pub struct TeamsSettings {
    /// The Workflows "when a webhook request is received" URL.
    pub workflow_url: Secret,
    /// Base for links to the approver page, without a trailing `/`.
    pub public_url: String,
}

/// The running Teams channel.
pub struct Teams {
    outbound: Outbound,
    settings: TeamsSettings,
    broker: Broker,
}

impl Teams {
    /// Starts the worker on `broker`'s events. Call inside the runtime.
    pub fn start(settings: TeamsSettings, broker: Broker) -> Result<Arc<Teams>, PostError> {
        let teams = Arc::new(Teams { outbound: Outbound::new()?, settings, broker });
        let follower = teams.clone();
        teams.broker.follow_new_holds(CHANNEL, move |approval| follower.clone().follow(approval));
        let adopter = teams.clone();
        teams.broker.follow_orphans(CHANNEL, move |approval| {
            let teams = adopter.clone();
            async move {
                // A hold whose holding replica stopped: post the outcome card it owed.
                if teams.broker.notes(CHANNEL).await.iter().any(|(id, _)| *id == approval.id) {
                    teams.post_outcome(&approval).await;
                }
            }
        });
        tokio::spawn(teams.clone().resume());
        Ok(teams)
    }

    /// Posts the request card, waits for the hold to settle, posts the outcome card.
    async fn follow(self: Arc<Self>, approval: Approval) {
        let id = approval.id.clone();
        let link = format!("{}/approvals/{}", self.settings.public_url, approval.id);
        // Noted before posting: a restart before the outcome card leaves the next run the
        // outcome to post.
        if let Err(error) = self.broker.remember(CHANNEL, &id, &json!({})).await {
            tracing::warn!(%error, approval = %id, "could not remember the Teams card");
        }
        if let Err(error) = self.post(&request_card(&approval, &link)).await {
            tracing::error!(%error, approval = %id, "could not post the approval card to Teams");
        }
        match self.broker.settled(&id).await {
            Ok(settled) => self.post_outcome(&settled).await,
            Err(error) => tracing::warn!(%error, approval = %id, "stopped following the approval"),
        }
    }

    /// Posts the outcome cards an earlier run owed: holds that settled (a restart cancels
    /// the pending ones) after their request card went out.
    async fn resume(self: Arc<Self>) {
        for (id, _) in self.broker.notes(CHANNEL).await {
            match self.broker.get(&id) {
                // Another replica's hold: it posts its own outcome card.
                Some(current) if current.is_pending() && !self.broker.holds_here(&current) => {}
                Some(current) if current.is_pending() => {
                    let teams = self.clone();
                    tokio::spawn(async move {
                        if let Ok(settled) = teams.broker.settled(&id).await {
                            teams.post_outcome(&settled).await;
                        }
                    });
                }
                Some(current) => self.post_outcome(&current).await,
                None => self.broker.forget(CHANNEL, &id).await,
            }
        }
    }

    async fn post_outcome(&self, settled: &Approval) {
        let link = format!("{}/approvals/{}", self.settings.public_url, settled.id);
        match self.post(&settled_card(settled, &link)).await {
            Ok(()) => self.broker.forget(CHANNEL, &settled.id).await,
            Err(error) => tracing::error!(%error, approval = %settled.id, "could not post the outcome card to Teams"),
        }
    }

    async fn post(&self, card: &Value) -> Result<(), PostError> {
        let posted = self.outbound.post_json("Teams workflow", self.settings.workflow_url.expose(), None, &message(card)).await;
        crate::telemetry::chat_post("teams", posted.is_ok());
        posted.map(|_| ())
    }
}

/// The channel name in rules' `channels` and in channel notes.
const CHANNEL: &str = "teams";

/// The envelope a Workflows webhook expects: a message with one card attachment.
pub fn message(card: &Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card}],
    })
}

/// The card for a new hold: the facts and a link to the approver page.
pub fn request_card(approval: &Approval, link: &str) -> Value {
    let mut body = vec![
        text_block(&format!("Approval needed: {}", approval.tool), true),
        text_block(&approval.reason, false),
    ];
    let shown = Shown::fit(&approval.args, ARGS_MAX, plain);
    if !shown.is_whole() {
        // First after the headline: a card must not read as the whole story when it is not.
        body.insert(1, json!({
            "type": "TextBlock",
            "text": format!(
                "These arguments are too long to show here in full. Left out: {}. Open the approval and read them all \
                 before deciding.",
                shown.cut_names(plain)
            ),
            "color": "Attention",
            "weight": "Bolder",
            "wrap": true,
        }));
    }
    body.push(facts(approval));
    body.push(text_block(if shown.is_whole() { "Arguments (redacted)" } else { "Arguments shown (redacted; some left out)" }, true));
    if !shown.text.is_empty() {
        body.push(json!({"type": "TextBlock", "text": shown.text, "fontType": "Monospace", "wrap": true}));
    }
    let action = if shown.is_whole() { "Review and decide" } else { "Review all arguments to decide" };
    card(body, link, action)
}


/// The card once the hold settled: the outcome, who decided, and the same facts.
pub fn settled_card(approval: &Approval, link: &str) -> Value {
    let mut body = vec![text_block(&format!("{}: {}", headline(approval.state), approval.tool), true)];
    let mut outcome = vec![fact("Outcome", approval.state.as_str())];
    let approvers: Vec<String> = approval
        .votes
        .iter()
        .filter(|v| v.verdict == Verdict::Approve)
        .map(|v| format!("{} (via {})", v.approver, v.channel))
        .collect();
    if let Some(denial) = approval.denial() {
        outcome.push(fact("Denied by", &format!("{} (via {})", denial.approver, denial.channel)));
        if let Some(comment) = &denial.comment {
            outcome.push(fact("Reason", comment));
        }
    } else if !approvers.is_empty() {
        outcome.push(fact("Approved by", &approvers.join(", ")));
    }
    if let Some(reason) = &approval.settled_reason {
        outcome.push(fact("Settled because", reason));
    }
    body.push(json!({"type": "FactSet", "facts": outcome}));
    body.push(facts(approval));
    card(body, link, "View approval")
}

fn card(body: Vec<Value>, link: &str, title: &str) -> Value {
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": body,
        "actions": [{"type": "Action.OpenUrl", "title": title, "url": link}],
    })
}

fn facts(approval: &Approval) -> Value {
    let mut facts = vec![
        fact("Tool", &approval.tool),
        fact("Server", &approval.server),
        fact("Risk", &approval.risk),
        fact("Caller", &approval.caller),
        fact("Rule", approval.rule.as_deref().unwrap_or("(default for this risk)")),
        fact("Expires", &approval.expires_at()),
        fact("Argument digest (HMAC-SHA256)", &approval.args_hmac),
        fact("Approval", approval.id.as_str()),
    ];
    if approval.quorum > 1 {
        facts.push(fact("Approvals needed", &approval.quorum.to_string()));
    }
    json!({"type": "FactSet", "facts": facts})
}

fn fact(title: &str, value: &str) -> Value {
    json!({"title": title, "value": plain(value)})
}

/// Longest argument text on a card; a webhook refuses oversized cards.
const ARGS_MAX: usize = 4000;

/// Text blocks and fact values render Markdown, and their text comes from the agent: break
/// up link, emphasis and list syntax (with zero-width spaces) so an argument cannot dress
/// itself up as a link or a button label on the approvers' card.
fn plain(text: &str) -> String {
    let text = crate::text::for_people(text);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if starts_a_block(line.trim_start()) {
            out.push('\u{200B}');
        }
        out.push_str(&line.replace("](", "]\u{200B}(").replace("**", "*\u{200B}*"));
    }
    out
}

/// A list item, heading or quote: `- x`, `* x`, `+ x`, `1. x`, `1) x`, `# x`, `> x`.
fn starts_a_block(line: &str) -> bool {
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    let rest = &line[digits..];
    if digits > 0 {
        return rest.starts_with(". ") || rest.starts_with(") ");
    }
    ["- ", "* ", "+ ", "# ", ">"].iter().any(|p| line.starts_with(p))
}

fn text_block(text: &str, bold: bool) -> Value {
    let text = plain(text);
    if bold {
        json!({"type": "TextBlock", "text": text, "weight": "Bolder", "size": "Medium", "wrap": true})
    } else {
        json!({"type": "TextBlock", "text": text, "wrap": true})
    }
}

fn headline(state: State) -> &'static str {
    match state {
        State::Pending => "Pending",
        State::Approved => "Approved",
        State::Denied => "Denied",
        State::Expired => "Expired",
        State::Cancelled => "Cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::Vote;

    fn sample() -> Approval {
        crate::approval::sample_approval(json!({"bucket": "tmp"}), None, "deletes need review")
    }

    #[test]
    fn agent_text_cannot_become_a_link_or_emphasis() {
        let hostile = crate::approval::sample_approval(json!({"note": "[Approve here](https://evil.example) **now**"}), None, "r");
        let text = request_card(&hostile, "https://airlock.example/approvals/x").to_string();
        assert!(!text.contains("](https://evil") && !text.contains("**now"), "{text}");
    }

    #[test]
    fn the_request_card_is_version_1_5_and_links_to_the_approver_page() {
        let link = "https://airlock.example/approvals/ap-0123456789abcdef01234567";
        let envelope = message(&request_card(&sample(), link));
        let card = &envelope["attachments"][0]["content"];
        assert_eq!(card["version"], "1.5");
        assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(card["actions"][0]["url"], link);
        let text = card.to_string();
        for fact in ["demo__delete_bucket", "carol", "high", &"ab".repeat(32), "tmp"] {
            assert!(text.contains(fact), "missing {fact}: {text}");
        }
    }

    #[test]
    fn a_card_whose_arguments_do_not_fit_warns_first_and_names_what_it_cut() {
        let args = json!({"a_note": "harmless ".repeat(600), "bucket": "prod-customers"});
        let card = request_card(&crate::approval::sample_approval(args, None, "r"), "https://a.example/approvals/x");
        assert_eq!(card["body"][1]["color"], "Attention");
        assert!(card["body"][1]["text"].as_str().unwrap().contains("a_note"));
        let text = card.to_string();
        assert!(text.contains("prod-customers") && !text.contains("harmless"), "{text}");
        assert_eq!(card["actions"][0]["title"], "Review all arguments to decide");
    }

    #[test]
    fn bidi_overrides_and_line_separators_are_shown_escaped() {
        let hostile = crate::approval::sample_approval(json!({"file": "a\u{202e}b\u{2028}c"}), None, "why\u{2066}");
        let text = request_card(&hostile, "x").to_string();
        assert!(!text.contains('\u{202e}') && !text.contains('\u{2028}') && !text.contains('\u{2066}'), "{text}");
        assert!(text.contains("a\\\\u202eb") && text.contains("why\\\\u2066"), "{text}");
    }

    #[test]
    fn the_outcome_card_names_the_denier_and_reason() {
        let mut approval = sample();
        approval.state = State::Denied;
        approval.votes.push(Vote { approver: "bob".into(), verdict: Verdict::Deny, channel: "web".into(), comment: Some("no".into()), at_ms: 0 });
        let text = settled_card(&approval, "x").to_string();
        assert!(text.contains("Denied: demo__delete_bucket") && text.contains("bob (via web)") && text.contains("\"no\""), "{text}");
    }
}
