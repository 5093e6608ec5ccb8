//! The broker: the one place an approval changes state.
//!
//! Every transition happens under one async lock and one store transition (which, on a
//! shared store, also excludes every other replica), is appended to the audit log
//! (durable) first, then written to the store, then announced. A reader therefore never
//! sees a state the log does not hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::audit::{AuditError, AuditLog, Record, RecordKind, Sha256Digest, canonical};
use crate::identity::{AuthMethod, Caller};
use crate::policy::ApprovalSpec;

use super::receipt::{Receipt, SignedReceipt};
use super::seal::Sealer;
use super::store::{ApprovalStore, StoreError, Transition, binding};
use super::{Approval, ApprovalId, Kind, NotEligible, State, Verdict, Vote, now_ms, rfc3339};

/// How long a settled approval stays in the state database (the API, the page). The audit
/// log keeps its whole history; this only keeps listing cheap.
const RETAIN_SETTLED_MS: u64 = 7 * 24 * 3600 * 1000;
/// How long an approved hold stays usable after its expiry, so a call that was approved
/// at the last moment can still run; after that, nothing counts.
const USE_GRACE_MS: u64 = 60_000;
/// Longest comment kept; the rest is cut (a comment is for people, not payloads).
const MAX_COMMENT: usize = 2000;

/// Why the broker could not do its job. The caller of a held tool gets a refusal.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the audit log refused the approval record: {0}")]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no approval {0}")]
    NotFound(ApprovalId),
    #[error("approval {id} is {state}, not approved and unused")]
    NotUsable { id: ApprovalId, state: &'static str },
    /// The tool changed or went away while the call waited: the approval is cancelled.
    #[error("approval {0} was bound to a tool definition that is no longer served")]
    ToolChanged(ApprovalId),
}

impl From<StoreError> for DecideError {
    fn from(error: StoreError) -> Self {
        DecideError::Broker(BrokerError::Store(error))
    }
}

/// Why a decision was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval {0}")]
    NotFound(ApprovalId),
    #[error("{0}")]
    NotEligible(#[from] NotEligible),
    #[error("approval {} expired at {}; nothing counts after expiry", .0.id, .0.expires_at())]
    Expired(Box<Approval>),
    #[error("approval {} is already {}", .0.id, .0.state.as_str())]
    Settled(Box<Approval>),
    #[error("{0}")]
    Broker(#[from] BrokerError),
}

/// What the channels hear about.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new hold was opened.
    Requested(Approval),
    /// Someone's decision counted but the hold is still pending (quorum not reached).
    Decided(Approval),
    /// The hold left `pending`, by any channel or by expiry.
    Settled(Approval),
    /// Sent after `Settled` when this replica cancelled the hold of a replica that stopped:
    /// its chat messages are this replica's to finish now.
    Orphaned(Approval),
}

/// A call asking to be held.
pub struct HoldRequest<'a> {
    pub kind: Kind,
    pub call_id: &'a str,
    pub session: &'a str,
    pub caller: &'a str,
    /// How the caller authenticated, and their linked person (see [`Approval::is_callers`]).
    pub caller_via: AuthMethod,
    pub caller_person: Option<&'a str>,
    pub tool: &'a str,
    pub server: &'a str,
    pub risk: &'a str,
    pub tool_fingerprint: Sha256Digest,
    /// The original arguments: hashed as they are, stored redacted.
    pub args: &'a Value,
    pub rule: Option<&'a str>,
    pub reason: &'a str,
    pub spec: Option<&'a ApprovalSpec>,
}

/// Result of a decision that was taken (or repeated).
#[derive(Debug, Clone)]
pub struct Decided {
    pub approval: Approval,
    /// False when this approver had already decided: the current state is returned.
    pub counted: bool,
}

/// The approval broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ApprovalStore>,
    /// When this gateway started: an approval approved before then lost its call.
    boot_ms: u64,
    audit: AuditLog,
    /// Serializes transitions; held across the audit append.
    lock: tokio::sync::Mutex<()>,
    /// Bumped after every transition; waiters re-read their approval.
    version: watch::Sender<u64>,
    events: broadcast::Sender<Event>,
    default_timeout: Duration,
    /// Who approves when no rule names approvers (`[approvals] default_approvers`).
    default_approvers: std::sync::OnceLock<Vec<String>>,
    sealer: Sealer,
    /// How many calls are waiting on each hold (a retry re-attaches).
    waiters: Mutex<HashMap<ApprovalId, usize>>,
}

impl Broker {
    /// Opens the approvals in the gateway state database (sled, one gateway). Holds left
    /// pending by an earlier run lost their call: they become `cancelled` ("gateway
    /// restarted"). Approvals settled more than a week ago are dropped from it (the log
    /// keeps them).
    pub async fn open(db: &sled::Db, audit: AuditLog, default_timeout: Duration) -> Result<Broker, BrokerError> {
        let store = super::store::sled::SledApprovals::open(db)?;
        Broker::open_in(Arc::new(store), audit, default_timeout).await
    }

    /// Opens the approvals in `store`. On a store no other gateway shares, holds left
    /// pending lost their call and are cancelled; on a shared one, other replicas' holds
    /// are theirs, and a replica that died is dealt with through its lease.
    pub async fn open_in(store: Arc<dyn ApprovalStore>, audit: AuditLog, default_timeout: Duration) -> Result<Broker, BrokerError> {
        let (events, _) = broadcast::channel(256);
        let changes = store.changes();
        let broker = Broker {
            inner: Arc::new(Inner {
                store,
                boot_ms: now_ms(),
                audit,
                lock: tokio::sync::Mutex::new(()),
                version: watch::Sender::new(0),
                events,
                default_timeout,
                default_approvers: std::sync::OnceLock::new(),
                sealer: Sealer::generate(),
                waiters: Mutex::default(),
            }),
        };
        let all = broker.inner.store.all()?;
        let cutoff = now_ms().saturating_sub(RETAIN_SETTLED_MS);
        let _guard = broker.inner.lock.lock().await;
        let mut tx = broker.inner.store.begin().await?;
        for approval in &all {
            if approval.settled_ms.is_some_and(|at| at < cutoff) {
                tx.remove(&approval.id).await?;
            }
        }
        if broker.inner.store.replica().is_none() {
            for approval in all.into_iter().filter(Approval::is_pending) {
                broker.settle(&mut *tx, approval, State::Cancelled, "gateway restarted", Vec::new()).await?;
            }
        }
        drop(tx);
        drop(_guard);
        if let Some(changes) = changes {
            tokio::spawn(broker.clone().announce_changes(changes));
        }
        if broker.inner.store.replica().is_some() {
            broker.reap_in_background();
        }
        Ok(broker)
    }

    /// Every third of a lease, cancels what stopped replicas left pending.
    fn reap_in_background(&self) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(super::store::LEASE / 3);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                match (Broker { inner }).reap().await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(count, "cancelled the holds of a gateway replica that stopped"),
                    // The database is away: nothing can be decided anywhere; try again.
                    Err(error) => tracing::debug!(%error, "could not look for holds of stopped replicas"),
                }
            }
        });
    }

    /// Turns changes other replicas made into this one's events and wakes its waiters, so
    /// a decision taken anywhere releases the call here.
    async fn announce_changes(self, mut changes: tokio::sync::mpsc::UnboundedReceiver<super::store::Change>) {
        let inner = Arc::downgrade(&self.inner);
        drop(self);
        while let Some(change) = changes.recv().await {
            let Some(inner) = inner.upgrade() else { return };
            inner.version.send_modify(|v| *v = v.wrapping_add(1));
            let after = change.after;
            let event = match change.before {
                Some(before) if before.is_pending() && !after.is_pending() => Event::Settled(after),
                Some(before) if before.votes.len() != after.votes.len() || before.quorum != after.quorum => Event::Decided(after),
                _ => continue,
            };
            let _ = inner.events.send(event);
        }
    }

    /// Keeps a channel's note about a hold (e.g. where its message is) until `forget`, so a
    /// channel can finish its work after a restart.
    pub async fn remember(&self, channel: &str, id: &ApprovalId, note: &Value) -> Result<(), BrokerError> {
        Ok(self.inner.store.remember(channel, id, note).await?)
    }

    /// Drops a channel's note about a hold.
    pub async fn forget(&self, channel: &str, id: &ApprovalId) {
        if let Err(error) = self.inner.store.forget(channel, id).await {
            tracing::warn!(%error, approval = %id, channel, "could not drop a channel note");
        }
    }

    /// A channel's notes, oldest hold first.
    pub async fn notes(&self, channel: &str) -> Vec<(ApprovalId, Value)> {
        match self.inner.store.notes(channel).await {
            Ok(notes) => notes,
            Err(error) => {
                tracing::warn!(%error, channel, "could not read the channel's notes");
                Vec::new()
            }
        }
    }

    /// Sets who approves when no matching rule names approvers (once, at start).
    #[must_use]
    pub fn with_default_approvers(self, approvers: Vec<String>) -> Broker {
        let _ = self.inner.default_approvers.set(approvers);
        self
    }

    /// The sealer for 2026-07-28 confirmation state (per gateway start).
    pub fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    /// The audit log the broker records to (channels use its redactor and key).
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// Channel events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Runs `follow` on a task of its own for each new hold that `channel` posts to chat,
    /// until the broker ends. Subscribes before returning, so no hold opened afterwards is
    /// missed; one task per hold, so a post stuck in retries never delays another.
    pub fn follow_new_holds<F, Fut>(&self, channel: &'static str, follow: F)
    where
        F: Fn(Approval) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.follow_events(channel, |event| match event {
            Event::Requested(approval) => Some(approval),
            _ => None,
        }, follow);
    }

    /// Runs `follow` on a task of its own for each approval that `pick` takes from an event
    /// and that `channel` posts to chat, until the broker ends.
    fn follow_events<P, F, Fut>(&self, channel: &'static str, pick: P, follow: F)
    where
        P: Fn(Event) -> Option<Approval> + Send + 'static,
        F: Fn(Approval) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut events = self.subscribe();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let Some(approval) = pick(event).filter(|a| a.posts_to_chat(channel)) {
                            tokio::spawn(follow(approval));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(channel, missed, "a chat channel fell behind; some holds were not followed");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// One approval.
    pub fn get(&self, id: &ApprovalId) -> Option<Approval> {
        match self.inner.store.get(id) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, approval = %id, "could not read an approval");
                None
            }
        }
    }

    /// Every approval, oldest first; with `state`, only those in it.
    pub fn list(&self, state: Option<State>) -> Vec<Approval> {
        let mut all: Vec<Approval> = self.all().into_iter().filter(|a| state.is_none_or(|s| a.state == s)).collect();
        all.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.id.cmp(&b.id)));
        all
    }

    fn all(&self) -> Vec<Approval> {
        self.inner.store.all().unwrap_or_else(|error| {
            tracing::warn!(%error, "could not list approvals");
            Vec::new()
        })
    }

    /// Opens a hold for a call, or re-attaches to the live one bound to the same caller,
    /// tool fingerprint and argument digest (pending, or approved and not yet used). The
    /// call counts as waiting on it from inside the lock, so a cancellation racing with
    /// this retry cannot cancel the hold under it.
    pub async fn hold(&self, request: HoldRequest<'_>) -> Result<(Approval, WaitGuard), BrokerError> {
        let args_hmac = self.inner.audit.redactor().digest(request.args).to_string();
        let fingerprint = request.tool_fingerprint.to_string();
        let spec = request.spec;
        let timeout = spec.and_then(|s| s.timeout).unwrap_or(self.inner.default_timeout);
        let (quorum, approvers) = self.requirements(request.kind, spec);
        let binding = binding(request.kind, request.caller, request.tool, &fingerprint, &args_hmac);
        let guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let now = now_ms();
        let live = tx.live(&binding).await?.filter(|a| {
            // A retry re-attaches only to a hold the policy would make again.
            a.rule.as_deref() == request.rule && a.quorum == quorum && a.approvers == approvers
        });
        match live {
            Some(found) if found.is_pending() && now >= found.expires_ms => {
                // Expired but its timer has not fired yet: settle it and open a new one.
                self.settle(&mut *tx, found, State::Expired, "no decision before the approval expired", Vec::new()).await?;
            }
            Some(mut found) if found.is_pending() || self.usable(&found) => {
                let waiting = self.wait_guard(&found.id);
                let here = self.inner.store.replica().map(str::to_owned);
                if found.is_pending() && found.holder != here {
                    // A retry on this replica of a call another one held: the hold is ours
                    // now, so that replica's lease no longer decides its fate.
                    found.holder = here;
                    tx.put(&found).await?;
                    drop(tx);
                    drop(guard);
                    self.schedule_expiry(&found);
                }
                return Ok((found, waiting));
            }
            _ => {}
        }
        let approval = Approval {
            id: ApprovalId::generate(),
            kind: request.kind,
            state: State::Pending,
            call_id: request.call_id.to_owned(),
            session: request.session.to_owned(),
            caller: request.caller.to_owned(),
            caller_person: request.caller_person.map(str::to_owned),
            caller_via: Some(request.caller_via),
            tool: request.tool.to_owned(),
            server: request.server.to_owned(),
            risk: request.risk.to_owned(),
            tool_fingerprint: fingerprint,
            args_hmac,
            args: self.inner.audit.redactor().redact(request.args),
            rule: request.rule.map(str::to_owned),
            reason: request.reason.to_owned(),
            quorum,
            approvers,
            channels: spec.map(|s| s.channels.iter().map(|c| c.as_str().to_owned()).collect()).unwrap_or_default(),
            created_ms: now,
            expires_ms: now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            votes: Vec::new(),
            voter_people: std::collections::BTreeMap::new(),
            settled_ms: None,
            settled_reason: None,
            executed_by: None,
            nonce: None,
            holder: self.inner.store.replica().map(str::to_owned),
        };
        let mut record = Record::new(RecordKind::ApprovalRequested)
            .principal(approval.caller.as_str())
            .session(approval.session.as_str())
            .call_id(approval.call_id.as_str())
            .tool(approval.tool.as_str())
            .risk(approval.risk.as_str())
            .approval_id(approval.id.as_str())
            .decision(approval.kind.as_str())
            .reason(approval.reason.as_str())
            .with_args(request.args, self.inner.audit.redactor())
            .detail(json!({
                "server": approval.server,
                "quorum": approval.quorum,
                "approvers": approval.approvers,
                "channels": approval.channels,
                "expires_at": approval.expires_at(),
                "tool_fingerprint": approval.tool_fingerprint,
            }));
        if let Some(rule) = &approval.rule {
            record = record.rule(rule.as_str());
        }
        self.commit(&mut *tx, &approval, vec![record]).await?;
        let waiting = self.wait_guard(&approval.id);
        drop(tx);
        drop(guard);
        self.schedule_expiry(&approval);
        let _ = self.inner.events.send(Event::Requested(approval.clone()));
        Ok((approval, waiting))
    }

    /// Records one person's decision. A second decision by the same person returns the
    /// current state without counting; a deny settles at once; the quorum-th distinct
    /// approval settles as approved.
    pub async fn decide(
        &self,
        id: &ApprovalId,
        who: &Caller,
        verdict: Verdict,
        comment: Option<String>,
        channel: &str,
    ) -> Result<Decided, DecideError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let mut approval = tx.get(id).await?.ok_or_else(|| DecideError::NotFound(id.clone()))?;
        let principal = who.principal.as_str();
        // With no identity configured, nobody can be told apart: an anonymous caller may
        // only confirm their own call in-band, on the connection that made it.
        let in_band_confirm = approval.kind == Kind::Confirm && channel == super::elicitation::CHANNEL;
        if who.via == AuthMethod::Anonymous && !in_band_confirm {
            return Err(NotEligible::Anonymous.into());
        }
        approval.may_decide(who, channel)?;
        if approval.state == State::Pending && now_ms() >= approval.expires_ms {
            let expired = self.settle(&mut *tx, approval, State::Expired, "no decision before the approval expired", Vec::new()).await?;
            return Err(DecideError::Expired(Box::new(expired)));
        }
        // A repeated decision returns the current state, pending or settled.
        match approval.state {
            State::Expired => return Err(DecideError::Expired(Box::new(approval))),
            _ if approval.has_voted(who) => {
                return Ok(Decided { approval, counted: false });
            }
            State::Pending => {}
            _ => return Err(DecideError::Settled(Box::new(approval))),
        }
        let comment = comment.map(|c| c.trim().chars().take(MAX_COMMENT).collect::<String>()).filter(|c| !c.is_empty());
        let vote = Vote { approver: principal.to_owned(), verdict, channel: channel.to_owned(), comment, at_ms: now_ms() };
        if let Some(person) = &who.person {
            approval.voter_people.insert(principal.to_owned(), person.as_str().to_owned());
        }
        let mut decided = Record::new(RecordKind::ApprovalDecided)
            .call_id(approval.call_id.as_str())
            .tool(approval.tool.as_str())
            .approval_id(approval.id.as_str())
            .approver(principal)
            .channel(channel)
            .decision(verdict.as_str())
            .detail(json!({"via": who.via, "person": who.person.as_ref().map(|p| p.as_str())}));
        if let Some(comment) = &vote.comment {
            decided = decided.comment(comment.as_str());
        }
        approval.votes.push(vote);
        let settles = match verdict {
            Verdict::Deny => Some((State::Denied, format!("denied by {principal}"))),
            Verdict::Approve if approval.approvals() >= approval.quorum => {
                Some((State::Approved, format!("{} of {} approvals", approval.approvals(), approval.quorum)))
            }
            Verdict::Approve => None,
        };
        let approval = match settles {
            Some((state, reason)) => self.settle(&mut *tx, approval, state, &reason, vec![decided]).await?,
            None => {
                self.commit(&mut *tx, &approval, vec![decided]).await?;
                let _ = self.inner.events.send(Event::Decided(approval.clone()));
                approval
            }
        };
        Ok(Decided { approval, counted: true })
    }

    /// Cancels a pending hold (a no-op on a settled one); returns the current state.
    pub async fn cancel(&self, id: &ApprovalId, reason: &str) -> Result<Approval, BrokerError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let approval = tx.get(id).await?.ok_or_else(|| BrokerError::NotFound(id.clone()))?;
        if !approval.is_pending() {
            return Ok(approval);
        }
        self.settle(&mut *tx, approval, State::Cancelled, reason, Vec::new()).await
    }

    /// Cancels a pending hold when no call waits on it any more (the client cancelled
    /// its call and no retry re-attached).
    pub async fn cancel_if_abandoned(&self, id: &ApprovalId, reason: &str) -> Result<Approval, BrokerError> {
        // Under the lock: `hold` registers a re-attaching retry under it too.
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let approval = tx.get(id).await?.ok_or_else(|| BrokerError::NotFound(id.clone()))?;
        if self.waiting_on(id) > 0 || !approval.is_pending() || !self.holds_here(&approval) {
            return Ok(approval);
        }
        self.settle(&mut *tx, approval, State::Cancelled, reason, Vec::new()).await
    }

    /// Whether this gateway holds `approval`'s call (always, where one gateway owns the
    /// store); a hold another replica took over is that replica's to cancel.
    pub fn holds_here(&self, approval: &Approval) -> bool {
        approval.holder.is_none() || approval.holder.as_deref() == self.inner.store.replica()
    }

    /// Cancels the pending holds of replicas whose lease lapsed ("the holding gateway
    /// stopped"); under the store's transition, so it happens once whichever replica
    /// finds them. Returns how many.
    pub async fn reap(&self) -> Result<usize, BrokerError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let orphans = tx.orphans().await?;
        let count = orphans.len();
        for orphan in orphans {
            let cancelled = self.settle(&mut *tx, orphan, State::Cancelled, "the holding gateway stopped", Vec::new()).await?;
            let _ = self.inner.events.send(Event::Orphaned(cancelled));
        }
        Ok(count)
    }

    /// Like `follow_new_holds`, for holds a stopped replica left (see [`Event::Orphaned`]).
    pub fn follow_orphans<F, Fut>(&self, channel: &'static str, follow: F)
    where
        F: Fn(Approval) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.follow_events(channel, |event| match event {
            Event::Orphaned(approval) => Some(approval),
            _ => None,
        }, follow);
    }

    /// The quorum and approvers a hold of `kind` gets from the rule's `spec`.
    fn requirements(&self, kind: Kind, spec: Option<&ApprovalSpec>) -> (u32, Vec<String>) {
        let quorum = match kind {
            Kind::Confirm => 1,
            Kind::Approve => spec.map_or(1, |s| s.quorum.max(1)),
        };
        let mut approvers: Vec<String> = spec.map(|s| s.approvers.iter().map(ToString::to_string).collect()).unwrap_or_default();
        if kind == Kind::Approve && approvers.is_empty() {
            approvers = self.inner.default_approvers.get().cloned().unwrap_or_default();
        }
        (quorum, approvers)
    }

    /// A reload changed the policy and it still asks for approval of this pending hold:
    /// a higher quorum and other approvers apply to it from now on (votes already cast
    /// still count); a lower quorum keeps the one it was opened with, so a reload never
    /// loosens a hold. Logs `approval_changed` when anything changed; returns the state.
    pub async fn tighten(
        &self,
        id: &ApprovalId,
        spec: Option<&ApprovalSpec>,
        rule: Option<&str>,
        policy: &str,
    ) -> Result<Approval, BrokerError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let mut approval = tx.get(id).await?.ok_or_else(|| BrokerError::NotFound(id.clone()))?;
        if !approval.is_pending() || approval.kind != Kind::Approve {
            return Ok(approval);
        }
        let (quorum, approvers) = self.requirements(approval.kind, spec);
        let quorum = quorum.max(approval.quorum);
        if quorum == approval.quorum && approvers == approval.approvers {
            return Ok(approval);
        }
        let before = json!({"quorum": approval.quorum, "approvers": approval.approvers, "rule": approval.rule});
        approval.quorum = quorum;
        approval.approvers = approvers;
        approval.rule = rule.map(str::to_owned);
        let record = Record::new(RecordKind::ApprovalChanged)
            .call_id(approval.call_id.as_str())
            .tool(approval.tool.as_str())
            .approval_id(approval.id.as_str())
            .reason("the policy changed on reload; the pending approval takes its new requirements")
            .detail(json!({
                "before": before,
                "quorum": approval.quorum,
                "approvers": approval.approvers,
                "rule": approval.rule,
                "policy_sha256": policy,
            }));
        self.commit(&mut *tx, &approval, vec![record]).await?;
        let _ = self.inner.events.send(Event::Decided(approval.clone()));
        Ok(approval)
    }

    /// Marks a pending hold expired once its time has come; returns the current state.
    pub async fn expire(&self, id: &ApprovalId) -> Result<Approval, BrokerError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let approval = tx.get(id).await?.ok_or_else(|| BrokerError::NotFound(id.clone()))?;
        if !approval.is_pending() || now_ms() < approval.expires_ms {
            return Ok(approval);
        }
        self.settle(&mut *tx, approval, State::Expired, "no decision before the approval expired", Vec::new()).await
    }

    /// Uses an approved hold for `call_id`: once only, while it is usable, and only while
    /// the tool is served with the fingerprint the approval is bound to (`tool_now`:
    /// its fingerprint in the catalog now, `None` when it is gone); otherwise the approval
    /// is cancelled with `changed` as the reason and `ToolChanged` returned. `forwarded`
    /// (the call's `call_forwarded` record) is logged before the approval counts as used,
    /// so the log always names the call that used it. `args` are the arguments about to be
    /// forwarded; they must be the ones approved. Returns the receipt the call carries.
    pub async fn consume(
        &self,
        id: &ApprovalId,
        call_id: &str,
        forwarded: Record,
        tool_now: Option<Sha256Digest>,
        changed: &str,
        args: &Value,
    ) -> Result<SignedReceipt, BrokerError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let mut approval = tx.get(id).await?.ok_or_else(|| BrokerError::NotFound(id.clone()))?;
        if self.usable(&approval) && tool_now.is_none_or(|now| now.to_string() != approval.tool_fingerprint) {
            // Approved, unused, and now for a tool nobody approved: nobody may use it.
            self.settle(&mut *tx, approval, State::Cancelled, changed, Vec::new()).await?;
            return Err(BrokerError::ToolChanged(id.clone()));
        }
        self.same_arguments(&approval, args)?;
        if !self.usable(&approval) {
            let state = if approval.executed_by.is_some() {
                "already used"
            } else if approval.state == State::Approved {
                "no longer usable (its call is gone or it expired)"
            } else {
                approval.state.as_str()
            };
            return Err(BrokerError::NotUsable { id: id.clone(), state });
        }
        approval.executed_by = Some(call_id.to_owned());
        self.commit(&mut *tx, &approval, vec![forwarded.approval_id(id.as_str())]).await?;
        Ok(SignedReceipt::sign(receipt_of(&approval, call_id, args), &self.inner.audit))
    }

    /// Refuses arguments other than the ones the hold was opened for.
    fn same_arguments(&self, approval: &Approval, args: &Value) -> Result<(), BrokerError> {
        let given = self.inner.audit.redactor().digest(args).to_string();
        // Both digests are shown to people anyway: nothing secret to compare in constant time.
        if given != approval.args_hmac {
            return Err(BrokerError::NotUsable { id: approval.id.clone(), state: "for other arguments" });
        }
        Ok(())
    }

    /// Approved, unused, approved during this gateway's run, and not long past expiry.
    fn usable(&self, approval: &Approval) -> bool {
        approval.state == State::Approved
            && approval.executed_by.is_none()
            && approval.settled_ms.is_some_and(|at| at >= self.inner.boot_ms)
            && now_ms() < approval.expires_ms.saturating_add(USE_GRACE_MS)
    }

    /// The receipt for a further round of an execution already under way (a downstream
    /// asked for input): only for the approval that call used.
    pub async fn continuation_receipt(
        &self,
        id: &ApprovalId,
        call_id: &str,
        forwarded: Record,
        args: &Value,
    ) -> Result<SignedReceipt, BrokerError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let approval = tx.get(id).await?.ok_or_else(|| BrokerError::NotFound(id.clone()))?;
        self.same_arguments(&approval, args)?;
        if approval.state != State::Approved || approval.executed_by.is_none() {
            return Err(BrokerError::NotUsable { id: id.clone(), state: approval.state.as_str() });
        }
        self.inner.audit.append_all(vec![forwarded.approval_id(id.as_str())]).await?;
        Ok(SignedReceipt::sign(receipt_of(&approval, call_id, args), &self.inner.audit))
    }

    /// A fresh single-use nonce for a sealed state; earlier ones stop working.
    pub async fn issue_nonce(&self, id: &ApprovalId) -> Result<String, BrokerError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let mut approval = tx.get(id).await?.ok_or_else(|| BrokerError::NotFound(id.clone()))?;
        let nonce = ApprovalId::generate().as_str().trim_start_matches("ap-").to_owned();
        approval.nonce = Some(nonce.clone());
        tx.put(&approval).await?;
        Ok(nonce)
    }

    /// Redeems a nonce: true once for the nonce last issued, false ever after.
    pub async fn redeem_nonce(&self, id: &ApprovalId, nonce: &str) -> Result<bool, BrokerError> {
        let _guard = self.inner.lock.lock().await;
        let mut tx = self.inner.store.begin().await?;
        let mut approval = tx.get(id).await?.ok_or_else(|| BrokerError::NotFound(id.clone()))?;
        // The nonce arrives inside an HMAC-checked state, so a plain comparison leaks nothing.
        let matches = approval.nonce.as_deref() == Some(nonce);
        if matches {
            approval.nonce = None;
            tx.put(&approval).await?;
        }
        Ok(matches)
    }

    /// Waits until the hold leaves `pending`, and returns it.
    pub async fn settled(&self, id: &ApprovalId) -> Result<Approval, BrokerError> {
        let mut version = self.inner.version.subscribe();
        loop {
            let approval = self.get(id).ok_or_else(|| BrokerError::NotFound(id.clone()))?;
            if !approval.is_pending() {
                return Ok(approval);
            }
            if version.changed().await.is_err() {
                return Err(BrokerError::NotFound(id.clone()));
            }
        }
    }

    /// Registers a waiting call for as long as the guard lives.
    fn wait_guard(&self, id: &ApprovalId) -> WaitGuard {
        *self.inner.waiters.lock().unwrap_or_else(PoisonError::into_inner).entry(id.clone()).or_default() += 1;
        WaitGuard { broker: self.clone(), id: id.clone() }
    }

    fn waiting_on(&self, id: &ApprovalId) -> usize {
        self.inner.waiters.lock().unwrap_or_else(PoisonError::into_inner).get(id).copied().unwrap_or(0)
    }

    /// Leaves `pending` (caller holds the lock): logs `extra` and `approval_settled`, then
    /// stores and announces the new state.
    async fn settle(
        &self,
        tx: &mut dyn Transition,
        mut approval: Approval,
        state: State,
        reason: &str,
        mut records: Vec<Record>,
    ) -> Result<Approval, BrokerError> {
        approval.state = state;
        approval.settled_ms = Some(now_ms());
        approval.settled_reason = Some(reason.to_owned());
        approval.nonce = None;
        let approvers: Vec<&str> =
            approval.votes.iter().filter(|v| v.verdict == Verdict::Approve).map(|v| v.approver.as_str()).collect();
        records.push(
            Record::new(RecordKind::ApprovalSettled)
                .call_id(approval.call_id.as_str())
                .tool(approval.tool.as_str())
                .approval_id(approval.id.as_str())
                .decision(state.as_str())
                .reason(reason)
                .detail(json!({"approvers": approvers})),
        );
        self.commit(&mut *tx, &approval, records).await?;
        let _ = self.inner.events.send(Event::Settled(approval.clone()));
        Ok(approval)
    }

    /// Log first, then state, then wake the waiters.
    async fn commit(&self, tx: &mut dyn Transition, approval: &Approval, records: Vec<Record>) -> Result<(), BrokerError> {
        self.inner.audit.append_all(records).await?;
        tx.put(approval).await?;
        self.inner.version.send_modify(|v| *v = v.wrapping_add(1));
        Ok(())
    }

    fn schedule_expiry(&self, approval: &Approval) {
        // Weak, so a pending timer does not keep the state database open.
        let inner = Arc::downgrade(&self.inner);
        let id = approval.id.clone();
        let wait = Duration::from_millis(approval.expires_ms.saturating_sub(now_ms()));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(inner) = inner.upgrade() else { return };
            if let Err(error) = (Broker { inner }).expire(&id).await {
                tracing::error!(%error, approval = %id, "could not expire approval");
            }
        });
    }
}

/// The receipt for `approval`'s execution with `args`. It carries the plain SHA-256 of the
/// canonical arguments so a downstream, which has them, can check it without our key; it
/// goes only to that downstream (never to the log, the API or a channel).
fn receipt_of(approval: &Approval, call_id: &str, args: &Value) -> Receipt {
    Receipt {
        v: 1,
        approval_id: approval.id.clone(),
        kind: approval.kind,
        call_id: call_id.to_owned(),
        tool: approval.tool.clone(),
        caller: approval.caller.clone(),
        approvers: approval.votes.iter().filter(|v| v.verdict == Verdict::Approve).map(|v| v.approver.clone()).collect(),
        decided_at: rfc3339(approval.settled_ms.unwrap_or(approval.created_ms)),
        args_sha256: Sha256Digest::of(&canonical(args)).to_string(),
        tool_fingerprint: approval.tool_fingerprint.clone(),
    }
}

/// A call waiting on a hold; dropping it stops counting the call.
pub struct WaitGuard {
    broker: Broker,
    id: ApprovalId,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut waiters = self.broker.inner.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = waiters.get_mut(&self.id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                waiters.remove(&self.id);
            }
        }
    }
}
