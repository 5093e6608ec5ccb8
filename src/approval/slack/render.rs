//! Block Kit for Slack: the request message, its settled form, and the deny-reason modal.
//!
//! Everything an agent controls (tool name, arguments, reason text) is escaped for
//! mrkdwn, so an argument cannot mention `@channel`, forge a link or close the code
//! block. Buttons carry only the approval id: what is approved is whatever the broker
//! holds under that id, never something the message claims.

use serde_json::{Value, json};

use crate::approval::{Approval, State, Verdict, Vote, clip};

/// `action_id` of the Approve button.
pub const APPROVE: &str = "airlock_approve";
/// `action_id` of the Deny button.
pub const DENY: &str = "airlock_deny";
/// `callback_id` of the deny-reason modal.
pub const DENY_MODAL: &str = "airlock_deny_reason";
/// `block_id` and `action_id` of the reason input in that modal.
pub const REASON: &str = "reason";

/// Longest text a section may carry (Slack refuses more than 3000).
const SECTION_MAX: usize = 2900;
/// Longest header text (Slack: 150).
const HEADER_MAX: usize = 150;

/// The `chat.postMessage` body for a new hold.
pub fn request_message(approval: &Approval, channel: &str) -> Value {
    let mut blocks = facts(approval);
    blocks.push(json!({
        "type": "actions",
        "block_id": "airlock_decision",
        "elements": [
            {"type": "button", "action_id": APPROVE, "style": "primary", "value": approval.id.as_str(),
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": DENY, "style": "danger", "value": approval.id.as_str(),
             "text": {"type": "plain_text", "text": "Deny"}},
        ],
    }));
    json!({
        "channel": channel,
        // The notification text is mrkdwn too: escaped like the blocks.
        "text": escape(&format!("Approval needed: {} on {} ({} risk), called by {}", approval.tool, approval.server, approval.risk, approval.caller)),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// The `chat.update` body once the hold settled: the same facts, the outcome and who
/// decided, and no buttons.
pub fn settled_message(approval: &Approval, channel: &str, ts: &str) -> Value {
    let mut blocks = facts(approval);
    let outcome = outcome(approval);
    blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&outcome, SECTION_MAX)}}));
    json!({
        "channel": channel,
        "ts": ts,
        "text": escape(&format!("{}: {} on {}", title_of(approval.state), approval.tool, approval.server)),
        "blocks": blocks,
    })
}

/// The `chat.update` body while a quorum is still short: the tally so far, buttons kept.
pub fn progress_message(approval: &Approval, channel: &str, ts: &str) -> Value {
    let mut message = request_message(approval, channel);
    if let Some(fields) = message.as_object_mut() {
        // chat.postMessage options that chat.update does not take.
        fields.remove("unfurl_links");
        fields.remove("unfurl_media");
        fields.insert("ts".to_owned(), json!(ts));
    }
    if let Some(blocks) = message["blocks"].as_array_mut() {
        let at = blocks.len().saturating_sub(1);
        blocks.insert(at, json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&outcome(approval), SECTION_MAX)}}));
    }
    message
}

/// The modal asking a denier for a reason; `private_metadata` carries the approval id.
pub fn deny_modal(approval: &Approval) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_MODAL,
        "private_metadata": approval.id.as_str(),
        "title": {"type": "plain_text", "text": "Deny tool call"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!(
                "Deny {} on {} called by {}?", code(&approval.tool), code(&approval.server), code(&approval.caller)), SECTION_MAX)}},
            {"type": "input", "block_id": REASON, "label": {"type": "plain_text", "text": "Reason"},
             "element": {"type": "plain_text_input", "action_id": REASON, "multiline": true, "max_length": 2000}},
        ],
    })
}

/// Header, facts, arguments and digest: the part shared by the request and its update.
fn facts(approval: &Approval) -> Vec<Value> {
    let mut fields = vec![
        field("Tool", &code(&approval.tool)),
        field("Server", &code(&approval.server)),
        field("Risk", &escape(&approval.risk)),
        field("Caller", &code(&approval.caller)),
        field("Rule", &approval.rule.as_deref().map_or_else(|| "(default for this risk)".to_owned(), code)),
        field("Expires", &escape(&approval.expires_at())),
    ];
    if approval.quorum > 1 {
        fields.push(field("Approvals needed", &approval.quorum.to_string()));
    }
    let args = serde_json::to_string_pretty(&approval.args).unwrap_or_default();
    let args = format!("*Arguments* (redacted)\n```\n{}\n```", clip(&fence_safe(&escape(&args)), SECTION_MAX - 40));
    vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&format!("Approval needed: {}", approval.tool), HEADER_MAX)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!("*Why:* {}", escape(&approval.reason)), SECTION_MAX)}, "fields": fields}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": args}}),
        json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("Argument digest (HMAC-SHA256): `{}`", approval.args_hmac)},
            {"type": "mrkdwn", "text": format!("Approval `{}`", approval.id)},
        ]}),
    ]
}

fn field(name: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": clip(&format!("*{name}*\n{value}"), 1900)})
}

/// The outcome line of a settled hold, naming who decided.
pub fn outcome(approval: &Approval) -> String {
    let who = |verdict: Verdict| -> String {
        approval.votes.iter().filter(|v| v.verdict == verdict).map(voter).collect::<Vec<_>>().join(", ")
    };
    let reason = escape(approval.settled_reason.as_deref().unwrap_or(""));
    match approval.state {
        State::Approved => format!(":white_check_mark: *Approved* by {}", who(Verdict::Approve)),
        State::Denied => match approval.denial() {
            Some(vote) => {
                let comment = vote.comment.as_deref().map(|c| format!(": {}", escape(c))).unwrap_or_default();
                format!(":no_entry: *Denied* by {}{comment}", voter(vote))
            }
            None => format!(":no_entry: *Denied*: {reason}"),
        },
        State::Expired => format!(":hourglass: *Expired*: {reason}"),
        State::Cancelled => format!(":heavy_multiplication_x: *Cancelled*: {reason}"),
        State::Pending => format!("{} of {} approvals so far: {}", approval.approvals(), approval.quorum, who(Verdict::Approve)),
    }
}

fn voter(vote: &Vote) -> String {
    format!("{} (via {})", escape(&vote.approver), escape(&vote.channel))
}

fn title_of(state: State) -> &'static str {
    match state {
        State::Pending => "Pending",
        State::Approved => "Approved",
        State::Denied => "Denied",
        State::Expired => "Expired",
        State::Cancelled => "Cancelled",
    }
}

/// Inline code: escaped, with backticks that would end it replaced.
fn code(text: &str) -> String {
    format!("`{}`", escape(text).replace('`', "'"))
}

/// Slack's three control characters in mrkdwn (`<` starts a link or mention).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Keeps a code block closed: a run of three backticks inside it would end it early, so
/// every pair gets a zero-width space between.
fn fence_safe(text: &str) -> String {
    text.replace("``", "`\u{200B}`").replace("``", "`\u{200B}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Approval {
        crate::approval::sample_approval(json!({"bucket": "<!channel> ```x```", "token": "[redacted]"}), Some("deletes"), "deletes need a second pair of eyes")
    }

    #[test]
    fn escaping_cannot_push_a_section_past_slacks_limit() {
        let hostile = crate::approval::sample_approval(json!({"bucket": "<".repeat(5000)}), None, "r");
        let message = request_message(&hostile, "C1");
        for block in message["blocks"].as_array().unwrap() {
            let text = block["text"]["text"].as_str().unwrap_or_default();
            assert!(text.chars().count() <= SECTION_MAX, "{} characters", text.chars().count());
        }
    }

    #[test]
    fn the_request_shows_every_fact_and_buttons_carry_only_the_id() {
        let message = request_message(&sample(), "C1");
        let text = message.to_string();
        for fact in ["demo__delete_bucket", "`demo`", "high", "`carol`", "`deletes`", "2027-01-15T08:00:00Z", &"ab".repeat(32)] {
            assert!(text.contains(fact), "missing {fact}: {text}");
        }
        let buttons = message["blocks"].as_array().unwrap().last().unwrap()["elements"].as_array().unwrap().clone();
        assert_eq!(buttons.len(), 2);
        for button in buttons {
            assert_eq!(button["value"], "ap-0123456789abcdef01234567");
        }
    }

    #[test]
    fn arguments_cannot_mention_the_channel_or_close_the_code_block() {
        let text = request_message(&sample(), "C1")["blocks"][2]["text"]["text"].as_str().unwrap().to_owned();
        assert!(!text.contains("<!channel>") && text.contains("&lt;!channel&gt;"), "{text}");
        let inner = text.trim_start_matches("*Arguments* (redacted)\n```").trim_end_matches("```");
        assert!(!inner.contains("```"), "{text}");
    }

    #[test]
    fn the_settled_message_names_who_decided_and_drops_the_buttons() {
        let mut approval = sample();
        approval.state = State::Denied;
        approval.votes.push(Vote {
            approver: "bob".into(),
            verdict: Verdict::Deny,
            channel: "slack".into(),
            comment: Some("not today".into()),
            at_ms: 0,
        });
        let message = settled_message(&approval, "C1", "123.456");
        assert_eq!(message["ts"], "123.456");
        let text = message.to_string();
        assert!(text.contains("*Denied* by bob (via slack): not today"), "{text}");
        assert!(!text.contains("\"actions\""), "{text}");
    }

    #[test]
    fn a_short_quorum_shows_the_tally_and_keeps_the_buttons() {
        let mut approval = sample();
        approval.quorum = 2;
        approval.votes.push(Vote { approver: "alice".into(), verdict: Verdict::Approve, channel: "api".into(), comment: None, at_ms: 0 });
        let message = progress_message(&approval, "C1", "1.2");
        assert_eq!(message["ts"], "1.2");
        assert!(message.get("unfurl_links").is_none());
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.last().unwrap()["type"], "actions");
        assert!(message.to_string().contains("1 of 2 approvals so far: alice (via api)"), "{message}");
    }

    #[test]
    fn an_expired_hold_says_expired_not_denied() {
        let mut approval = sample();
        approval.state = State::Expired;
        approval.settled_reason = Some("no decision before the approval expired".into());
        let line = outcome(&approval);
        assert!(line.contains("Expired") && !line.contains("Denied"), "{line}");
    }
}
