//! Approval holds: pending approvals, their state machine, receipts and sealed request
//! state (DESIGN.md §4 step 5, §5).
//!
//! Owns: `Approval` and its states, the `Broker` that serializes every transition, keeps
//! approvals in the gateway state database and records each transition in the audit log
//! before it takes effect; approval receipts (`receipt`); the HMAC-sealed `requestState`
//! of 2026-07-28 confirmations (`seal`); the channels (one file each).
//! Uses: `audit` (records, signing), `identity` (who decides), `policy` (what the rule
//! asked for), `risk`.
//! Must not: forward calls or reach into `gateway`; channels depend on the broker, never
//! the reverse.
//!
//! States: `pending → approved | denied | expired | cancelled`. An `approve` hold is never
//! decided by its own caller (nor by another identity of the caller's `person`); a
//! `confirm` hold only by its caller: in-band, or out of band by a person (a `human`
//! identity or an OIDC sign-in on the page) with a credential other than the one that made
//! the call. Each person counts once, any deny is final, nothing counts after expiry, and
//! an approved hold authorises one execution of its exact argument digest.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::{AuthMethod, Caller, Holder, counts_as, fold_name};

pub mod metrics;
pub mod api;
mod broker;
pub mod elicitation;
pub mod outbound;
pub mod receipt;
pub mod seal;
pub(crate) mod shown;
pub mod store;
pub mod slack;
pub mod teams;
pub mod web;

pub use broker::{Broker, BrokerError, DecideError, Decided, Event, HoldRequest, WaitGuard};
pub use receipt::{Receipt, SignedReceipt};

/// An approval's id: `ap-` and 24 hex digits from the system RNG, so a link to it cannot
/// be guessed from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalId(String);

impl ApprovalId {
    /// A fresh random id.
    pub fn generate() -> ApprovalId {
        let mut bytes = [0u8; 12];
        // The system RNG does not fail on Linux; fall back to time-derived bytes if it did.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
            bytes.copy_from_slice(&nanos.to_le_bytes()[..12]);
        }
        ApprovalId(format!("ap-{}", hex::encode(bytes)))
    }

    /// Accepts only the shape `generate` makes, so ids from URLs and buttons are plain.
    pub fn parse(text: &str) -> Option<ApprovalId> {
        let hex = text.strip_prefix("ap-")?;
        (hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| ApprovalId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may settle a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The caller's own human confirms (MCP elicitation, or out of band as the caller).
    Confirm,
    /// Independent approvers, never the caller.
    Approve,
}

impl Kind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Confirm => "confirm",
            Kind::Approve => "approve",
        }
    }
}

/// Where a hold is in its life. Only `Pending` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl State {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(text: &str) -> Option<State> {
        [State::Pending, State::Approved, State::Denied, State::Expired, State::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

/// A decision that counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: String,
    pub verdict: Verdict,
    /// `elicitation`, `api`, `slack`, `teams` or `web`.
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// Whether `who` is the party of `principal` (and its linked `person`): the same name after
/// folding, or the same person. Only ever used to refuse (self-approval, repeated votes).
fn same_party(principal: &str, person: Option<&str>, who: &Caller) -> bool {
    fold_name(principal) == fold_name(who.principal.as_str())
        || (person.is_some() && who.person.is_some() && counts_as(principal, person) == who.counts_as())
}

/// One hold, as stored in `<data_dir>/state` (tree `approvals`) and shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub kind: Kind,
    pub state: State,
    /// The call that opened it.
    pub call_id: String,
    pub session: String,
    pub caller: String,
    /// The caller's linked person, if any: their other identities count as the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_person: Option<String>,
    /// How the caller authenticated: an out-of-band confirmation must use another credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_via: Option<AuthMethod>,
    /// Exposed tool name, and the downstream server and tool behind it.
    pub tool: String,
    pub server: String,
    pub risk: String,
    /// Hex SHA-256 of the tool's definition when the hold was opened.
    pub tool_fingerprint: String,
    /// Hex HMAC-SHA256 (key `<data_dir>/args-key`) of the canonical arguments: what people
    /// and the log see, and what the hold is bound to. Never a plain SHA-256, which would
    /// let anyone who sees it search for a redacted low-entropy value. (Holds stored before
    /// keyed digests read from `args_sha256`: they settle or are cancelled, never re-bound.)
    #[serde(alias = "args_sha256")]
    pub args_hmac: String,
    /// The arguments with the configured redactions applied.
    pub args: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub reason: String,
    pub quorum: u32,
    /// `group:NAME` / `user:NAME`; empty = anyone authenticated but the caller.
    pub approvers: Vec<String>,
    /// Channels the rule asked for; empty = every configured one.
    pub channels: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub votes: Vec<Vote>,
    /// The linked person of each voter who has one (approver → person): one person's
    /// identities count once.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub voter_people: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_ms: Option<u64>,
    /// Why it settled as it did, in words (e.g. "gateway restarted").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_reason: Option<String>,
    /// The call that used the approval: set once, so it authorises one execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_by: Option<String>,
    /// The single-use nonce of a sealed 2026-07-28 confirmation, until it is redeemed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The replica whose call waits on it, where replicas share the store; when that
    /// replica's lease lapses the hold is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

impl Approval {
    /// Distinct approvers who approved so far.
    pub fn approvals(&self) -> u32 {
        u32::try_from(self.votes.iter().filter(|v| v.verdict == Verdict::Approve).count()).unwrap_or(u32::MAX)
    }

    /// The deny that settled it, if any.
    pub fn denial(&self) -> Option<&Vote> {
        self.votes.iter().find(|v| v.verdict == Verdict::Deny)
    }

    /// True while a decision can still change it.
    pub fn is_pending(&self) -> bool {
        self.state == State::Pending
    }

    /// Whether chat channels (Slack, Teams) post this hold: only independent approvals.
    /// A confirmation is the caller's alone, so posting it would only show its arguments
    /// to a room of people who cannot act on it.
    pub fn posts_to_chat(&self, channel: &str) -> bool {
        self.kind == Kind::Approve && self.announces_on(channel)
    }

    /// Whether this approval was asked for on `channel` (an empty list means all).
    pub fn announces_on(&self, channel: &str) -> bool {
        self.channels.is_empty() || self.channels.iter().any(|c| c == channel)
    }

    /// RFC 3339 form of the expiry, for people.
    pub fn expires_at(&self) -> String {
        rfc3339(self.expires_ms)
    }

    /// Whether `who` (or another identity of their person) has decided already.
    pub fn has_voted(&self, who: &Caller) -> bool {
        self.votes.iter().any(|v| same_party(&v.approver, self.voter_people.get(&v.approver).map(String::as_str), who))
    }

    /// Whether `who` is this hold's caller: the same principal, or an identity linked to
    /// the caller's person.
    pub fn is_callers(&self, who: &Caller) -> bool {
        same_party(&self.caller, self.caller_person.as_deref(), who)
    }

    /// Whether someone may see this hold at all: its caller, and whoever may decide it.
    /// Others learn nothing of the call (arguments, comments, voters).
    pub fn may_view(&self, who: &Caller) -> bool {
        self.is_callers(who) || (self.kind == Kind::Approve && self.may_decide(who, api::CHANNEL).is_ok())
    }

    /// Whether `who` may decide this hold on `channel`, and if not, why.
    pub fn may_decide(&self, who: &Caller, channel: &str) -> Result<(), NotEligible> {
        match self.kind {
            Kind::Confirm if !self.is_callers(who) => Err(NotEligible::NotTheCaller),
            // In-band: the caller's own client asked its human (elicitation, sealed state).
            Kind::Confirm if channel == elicitation::CHANNEL => Ok(()),
            // Out of band, the agent itself could answer with anything it holds: only a
            // person, and not with the credential the call was made with.
            Kind::Confirm if who.holder != Holder::Human => Err(NotEligible::NotAPerson),
            Kind::Confirm if self.caller_via.is_none_or(|via| via == who.via) && self.caller == who.principal.as_str() => {
                Err(NotEligible::SameCredential)
            }
            Kind::Confirm => Ok(()),
            Kind::Approve if self.is_callers(who) => Err(NotEligible::SelfApproval),
            Kind::Approve if self.approvers.is_empty() => Ok(()),
            Kind::Approve => {
                let listed = self.approvers.iter().any(|a| match a.split_once(':') {
                    Some(("group", g)) => who.groups.iter().any(|mine| mine == g),
                    Some(("user", u)) => u == who.principal.as_str(),
                    _ => false,
                });
                if listed { Ok(()) } else { Err(NotEligible::NotAnApprover(self.approvers.join(", "))) }
            }
        }
    }
}

/// Who can confirm a `confirm` hold outside the caller's MCP client, in words for the
/// agent's answer and for a refused decision.
pub const WHO_CONFIRMS: &str = "a person confirms it: the caller's human signed in on the approver page with single \
     sign-on, or with an identity marked `human = true` in [identity]; the credential that made the call (the \
     agent's token, the stdio user) cannot confirm it";

/// How a hold's caller gets a `confirm` hold decided out of band (its client could not be
/// asked): by a person, never by the agent running `airlock approvals approve` itself.
pub fn confirm_out_of_band(approval: &Approval, public_url: Option<&str>) -> String {
    let page = match public_url {
        Some(url) if approval.announces_on(web::CHANNEL) || approval.announces_on("teams") => {
            format!(" (at {url}/approvals/{})", approval.id)
        }
        _ => String::new(),
    };
    format!("ask your human to confirm approval {}{page}: {WHO_CONFIRMS}", approval.id)
}

/// Why someone may not decide a hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotEligible {
    #[error("you made this call; an independent approver must decide it")]
    SelfApproval,
    #[error("only the caller confirms this call")]
    NotTheCaller,
    #[error("this identity may be an agent's; {WHO_CONFIRMS}")]
    NotAPerson,
    #[error("this is the credential that made the call; {WHO_CONFIRMS}")]
    SameCredential,
    #[error("only {0} may decide this call")]
    NotAnApprover(String),
    #[error("an unauthenticated caller cannot decide approvals")]
    Anonymous,
}

/// At most `max` characters, with an ellipsis when cut (chat payloads have size limits).
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// RFC 3339 UTC (seconds) of unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    // humantime formats years up to 9999; a longer timeout in a policy must not panic here.
    const LAST_MS: u64 = 253_402_300_799_000; // 9999-12-31T23:59:59Z
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.min(LAST_MS))).to_string()
}

#[cfg(test)]
mod tests;

/// A pending `approve` hold for tests of the renderers, with `args` and `rule` as given.
#[cfg(test)]
pub(crate) fn sample_approval(args: Value, rule: Option<&str>, reason: &str) -> Approval {
    Approval {
        id: ApprovalId("ap-0123456789abcdef01234567".to_owned()),
        kind: Kind::Approve,
        state: State::Pending,
        call_id: "c1".into(),
        session: "s1".into(),
        caller: "carol".into(),
        caller_person: None,
        caller_via: Some(AuthMethod::StaticToken),
        tool: "demo__delete_bucket".into(),
        server: "demo".into(),
        risk: "high".into(),
        tool_fingerprint: "ff".repeat(32),
        args_hmac: "ab".repeat(32),
        args,
        rule: rule.map(str::to_owned),
        reason: reason.to_owned(),
        quorum: 1,
        approvers: Vec::new(),
        channels: Vec::new(),
        created_ms: 0,
        expires_ms: 1_800_000_000_000,
        votes: Vec::new(),
        voter_people: std::collections::BTreeMap::new(),
        settled_ms: None,
        settled_reason: None,
        executed_by: None,
        nonce: None,
        holder: None,
    }
}
