//! Block Kit for Slack: the request message, its settled form, and the deny-reason modal.
//!
//! Everything an agent controls (tool name, arguments, reason text) is escaped for
//! mrkdwn, so an argument cannot mention `@channel`, forge a link or close the code
//! block. Buttons carry only the approval id: what is approved is whatever the broker
//! holds under that id, never something the message claims.
//!
//! Arguments are shown whole or not at all, member by member (`approval::shown`): when
//! some do not fit, the message says so first, names the cut keys, and has no Approve
//! button, only Deny and a link to the approver page, which shows everything.

use serde_json::{Value, json};

use crate::approval::shown::Shown;
use crate::approval::{Approval, State, Verdict, Vote, clip};

/// `action_id` of the Approve button.
pub const APPROVE: &str = "airlock_approve";
/// `action_id` of the link button to the approver page (Slack posts its clicks too).
pub const OPEN_PAGE: &str = "airlock_open_page";
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

/// Longest argument text in the arguments section (its label and fence take the rest).
const ARGS_MAX: usize = SECTION_MAX - 80;

/// The arguments as this channel shows them: escaped for mrkdwn, fence-safe, whole members.
fn shown_args(approval: &Approval) -> Shown {
    Shown::fit(&approval.args, ARGS_MAX, |text| fence_safe(&escape(text)))
}

/// Whether the message for `approval` shows its arguments whole, and so has an Approve
/// button. The interaction handler refuses an Approve for a hold where it is not.
pub fn shows_whole(approval: &Approval) -> bool {
    shown_args(approval).is_whole()
}

/// The `chat.postMessage` body for a new hold. `page`: the approver page's base URL
/// (`[http] public_url`), linked when the arguments do not fit.
pub fn request_message(approval: &Approval, channel: &str, page: Option<&str>) -> Value {
    let mut blocks = facts(approval);
    let deny = json!({"type": "button", "action_id": DENY, "style": "danger", "value": approval.id.as_str(),
                      "text": {"type": "plain_text", "text": "Deny"}});
    let elements = if shows_whole(approval) {
        vec![
            json!({"type": "button", "action_id": APPROVE, "style": "primary", "value": approval.id.as_str(),
                   "text": {"type": "plain_text", "text": "Approve"}}),
            deny,
        ]
    } else if let Some(page) = page {
        vec![
            json!({"type": "button", "action_id": OPEN_PAGE, "style": "primary", "value": approval.id.as_str(),
                   "url": format!("{page}/approvals/{}", approval.id),
                   "text": {"type": "plain_text", "text": "Review all arguments to decide"}}),
            deny,
        ]
    } else {
        vec![deny]
    };
    blocks.push(json!({"type": "actions", "block_id": "airlock_decision", "elements": elements}));
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
pub fn progress_message(approval: &Approval, channel: &str, ts: &str, page: Option<&str>) -> Value {
    let mut message = request_message(approval, channel, page);
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
    let shown = shown_args(approval);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&crate::text::for_people(&format!("Approval needed: {}", approval.tool)), HEADER_MAX)}}),
    ];
    if !shown.is_whole() {
        // First, before anything an approver might read as the whole story.
        let warning = format!(
            ":warning: *These arguments are too long to show here in full.* Left out: {}. \
             Read them all on the approver page (or `airlock approvals show {}`) before deciding; \
             this message cannot approve.",
            shown.cut_names(code),
            approval.id
        );
        blocks.push(json!({"type": "section", "block_id": "airlock_cut", "text": {"type": "mrkdwn", "text": clip(&warning, SECTION_MAX)}}));
    }
    let label = if shown.is_whole() { "*Arguments* (redacted)" } else { "*Arguments shown* (redacted; the keys above are left out)" };
    let args = if shown.text.is_empty() { format!("{label}: none fit") } else { format!("{label}\n```\n{}\n```", shown.text) };
    blocks.extend([
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!("*Why:* {}", escape(&approval.reason)), SECTION_MAX)}, "fields": fields}),
        json!({"type": "section", "block_id": "airlock_args", "text": {"type": "mrkdwn", "text": args}}),
        json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("Argument digest (HMAC-SHA256): `{}`", approval.args_hmac)},
            {"type": "mrkdwn", "text": format!("Approval `{}`", approval.id)},
        ]}),
    ]);
    blocks
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

/// Slack's three control characters in mrkdwn (`<` starts a link or mention), after the
/// characters that reorder or break what a person reads (`text::for_people`).
pub fn escape(text: &str) -> String {
    crate::text::for_people(text).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
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
        let message = request_message(&hostile, "C1", None);
        for block in message["blocks"].as_array().unwrap() {
            let text = block["text"]["text"].as_str().unwrap_or_default();
            assert!(text.chars().count() <= SECTION_MAX, "{} characters", text.chars().count());
        }
    }

    #[test]
    fn the_request_shows_every_fact_and_buttons_carry_only_the_id() {
        let message = request_message(&sample(), "C1", None);
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
        let text = request_message(&sample(), "C1", None)["blocks"][2]["text"]["text"].as_str().unwrap().to_owned();
        assert!(!text.contains("<!channel>") && text.contains("&lt;!channel&gt;"), "{text}");
        let inner = text.trim_start_matches("*Arguments* (redacted)\n```").trim_end_matches("```");
        assert!(!inner.contains("```"), "{text}");
    }

    #[test]
    fn arguments_that_do_not_fit_are_cut_whole_named_and_leave_no_approve_button() {
        let args = json!({"a_note": "harmless ".repeat(400), "bucket": "prod-customers"});
        let approval = crate::approval::sample_approval(args, None, "deletes");
        assert!(!shows_whole(&approval));
        let message = request_message(&approval, "C1", Some("https://airlock.example"));
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[1]["block_id"], "airlock_cut", "the warning comes right after the header");
        assert!(blocks[1]["text"]["text"].as_str().unwrap().contains("`a_note`"));
        let text = message.to_string();
        assert!(text.contains("prod-customers") && !text.contains("harmless"), "{text}");
        let actions = blocks.last().unwrap()["elements"].as_array().unwrap().clone();
        assert!(actions.iter().all(|a| a["action_id"] != APPROVE));
        assert_eq!(actions[0]["url"], format!("https://airlock.example/approvals/{}", approval.id));
        for block in blocks {
            assert!(block["text"]["text"].as_str().unwrap_or_default().chars().count() <= SECTION_MAX);
        }
        let without_page = request_message(&approval, "C1", None);
        let elements = without_page["blocks"].as_array().unwrap().last().unwrap()["elements"].clone();
        assert_eq!(elements.as_array().unwrap().len(), 1, "Deny only: {elements}");
    }

    #[test]
    fn bidi_overrides_in_arguments_are_shown_escaped() {
        let approval = crate::approval::sample_approval(json!({"file": "invoice\u{202e}fdp.exe"}), None, "r");
        let text = request_message(&approval, "C1", None).to_string();
        assert!(!text.contains('\u{202e}') && text.contains("invoice\\\\u202efdp.exe"), "{text}");
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
        let message = progress_message(&approval, "C1", "1.2", None);
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
