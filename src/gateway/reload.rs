//! Live reload: re-reading `airlock.toml`, the manifests and the policies into a running
//! gateway (SIGHUP, and the control socket's `reload`).
//!
//! Owns: `Reloader` (the one entry point), `ActivePolicy` (the set calls are decided by),
//! what a reload reports (`ReloadReport`, `ReloadError`) and the `config_loaded` /
//! `config_rejected` records.
//! Uses: a loader the CLI hands in (the same code as `airlock check`, so a refused reload
//! prints the same `file:line: message` problems), `downstream::Downstreams::apply`.
//! Must not: validate config itself (the loader does; this module reads the files only
//! to digest their parsed TOML), or change anything when a file has a problem.
//!
//! Order of a reload: load and validate everything; refuse (logging `config_rejected`) on
//! any problem; log `config_loaded` durably; only then swap the policy set and start, stop
//! or restart the downstreams whose manifests changed. So every `decision` record's
//! `policy_sha256` is named by an earlier `config_loaded`. What applies live: the policy
//! set, the manifests, and `[gateway] manifests` / `policies` (the directories read).
//! Every other key of `airlock.toml` is reported under `needs_restart` and keeps its
//! running value until the gateway restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::{AuditError, Record, RecordKind, Sha256Digest, canonical};
use crate::config::{Config, ConfigErrors, Problem};
use crate::manifest::Manifest;
use crate::policy::{LimitBackend, Limiter, PolicySet};

use super::Gateway;
use super::forward::Verdict;
use super::hold::HeldCall;
use crate::approval::ApprovalId;
use crate::policy::Effect;

/// Keys of `airlock.toml` a reload applies (everything else needs a restart).
const LIVE_KEYS: &[&str] = &["gateway.manifests", "gateway.policies"];

/// The policy set in force and the counters of its `[[limit]]` entries.
#[derive(Debug)]
pub struct ActivePolicy {
    /// The rules.
    pub set: PolicySet,
    /// Rate-limit buckets: in memory a reload that changes the policy set starts them
    /// afresh; shared ones are kept per limit id and quota.
    pub limits: Limiter,
}

impl ActivePolicy {
    /// The set with its limits counting in `backend`.
    pub fn new(set: PolicySet, backend: &LimitBackend) -> ActivePolicy {
        ActivePolicy { limits: backend.limiter(set.limits()), set }
    }
}

/// One load of the files: what `airlock check` reads, with every problem it found.
pub struct Sources {
    /// `airlock.toml`, checked.
    pub config: Config,
    /// The manifests, checked.
    pub manifests: Vec<Manifest>,
    /// The policy set, checked.
    pub policies: PolicySet,
    /// Every problem of every file; not empty means nothing is applied.
    pub problems: ConfigErrors,
}

/// Reads the files again (the CLI's `airlock check` loader).
pub type Loader = dyn Fn() -> Sources + Send + Sync;

/// One thing a reload changed, or would need a restart to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Change {
    /// The policy set is another one now.
    Policies { from: Sha256Digest, to: Sha256Digest },
    /// A downstream started from a new manifest.
    ServerAdded { server: String },
    /// A downstream stopped: its manifest is gone.
    ServerRemoved { server: String },
    /// A downstream restarted from its changed manifest.
    ServerRestarted { server: String },
}

/// What a successful reload did. Serialises as the `reload` answer of the control socket.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// The policy set in force now.
    pub policy_sha256: Sha256Digest,
    /// `airlock.toml` as read (canonical form of its parsed TOML).
    pub config_sha256: Sha256Digest,
    /// What changed; empty when the files say what was already running.
    pub changed: Vec<Change>,
    /// Keys of `airlock.toml` that differ from the running value and apply only on a
    /// restart (`section.key`); they keep their running value.
    pub needs_restart: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A file has problems; the running set stays in force. Displays as `airlock check` does.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// `config_loaded` could not be logged, so nothing was swapped (fail closed).
    #[error("could not record the reload: {0}")]
    Audit(#[from] AuditError),
}

impl ReloadError {
    /// The problems of the files (empty for an audit failure).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ReloadError::Invalid(problems) => problems.problems(),
            ReloadError::Audit(_) => &[],
        }
    }
}

/// As the control socket answers a refused reload:
/// `{"error": "invalid" | "audit", "message": …, "problems": ["file:line: message", …]}`.
impl Serialize for ReloadError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let error = match self {
            ReloadError::Invalid(_) => "invalid",
            ReloadError::Audit(_) => "audit",
        };
        let problems: Vec<String> = self.problems().iter().map(ToString::to_string).collect();
        json!({"error": error, "message": self.to_string(), "problems": problems}).serialize(serializer)
    }
}

/// The digests of what is running: what the next reload compares against.
struct Running {
    /// `airlock.toml` as parsed at start (restart-only keys keep these values).
    config: Value,
    config_sha256: Sha256Digest,
    manifests: BTreeMap<String, Sha256Digest>,
}

/// Reloads one gateway. `reload` runs one at a time.
pub struct Reloader {
    gateway: Arc<Gateway>,
    load: Arc<Loader>,
    running: tokio::sync::Mutex<Running>,
}

/// What a gateway starts from, read before it starts: `Gateway::start` records its
/// `config_loaded` (reason `start`) in one group with `gateway_started`, and `Reloader::start`
/// compares reloads against it.
pub struct Starting {
    running: Running,
    record: Record,
}

impl Starting {
    /// `config_file`, `manifests` and `policies` are what the gateway starts from.
    pub fn new(config_file: Option<&Path>, manifests: &[Manifest], policies: &PolicySet) -> Starting {
        let config = config_document(config_file);
        let running = Running {
            config_sha256: Sha256Digest::of(&canonical(&config)),
            config,
            manifests: manifest_digests(manifests),
        };
        let record = loaded("start", &running, policies, &[]);
        Starting { running, record }
    }

    /// The `config_loaded` record of the start.
    pub(super) fn record(&self) -> Record {
        self.record.clone()
    }
}

impl Reloader {
    /// The reloader of a gateway that `Gateway::start` started from `starting` (which
    /// recorded its `config_loaded`).
    pub fn start(gateway: Arc<Gateway>, starting: Starting, load: Arc<Loader>) -> Arc<Reloader> {
        Arc::new(Reloader { gateway, load, running: tokio::sync::Mutex::new(starting.running) })
    }

    /// Re-reads every file; applies them only if all are valid. A broken file changes
    /// nothing, is logged as `config_rejected` and returned with its problems.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut running = self.running.lock().await;
        let load = self.load.clone();
        let sources = match tokio::task::spawn_blocking(move || load()).await {
            Ok(sources) => sources,
            Err(error) => {
                let problem = Problem::file(Path::new("airlock.toml"), format!("the reload's loader failed: {error}"));
                return Err(self.rejected(ConfigErrors::from(problem)).await);
            }
        };
        if !sources.problems.is_empty() {
            return Err(self.rejected(sources.problems).await);
        }
        let old_policy = self.gateway.policy();
        let config = config_document(sources.config.file.as_deref());
        let next = Running {
            config_sha256: Sha256Digest::of(&canonical(&config)),
            config: running.config.clone(),
            manifests: manifest_digests(&sources.manifests),
        };
        let needs_restart = restart_keys(&running.config, &config);
        let mut changed = server_changes(&running.manifests, &next.manifests);
        let (from, to) = (old_policy.set.digest().set(), sources.policies.digest().set());
        if from != to {
            changed.insert(0, Change::Policies { from, to });
        }
        // Logged before anything is swapped: no decision names a set no record announced.
        let record = loaded("reload", &next, &sources.policies, &changed)
            .reason(format!("reload; needs restart: {}", if needs_restart.is_empty() { "nothing".to_owned() } else { needs_restart.join(", ") }));
        let _recorded = self.gateway.audit().append(record).await?;
        if from != to {
            self.gateway.policy.send_replace(Arc::new(ActivePolicy::new(sources.policies, &self.gateway.limit_backend)));
        }
        let applied = self.gateway.downstreams().apply(sources.manifests).await;
        tracing::debug!(?applied, "downstreams after reload");
        let report = ReloadReport { policy_sha256: to, config_sha256: next.config_sha256, changed, needs_restart };
        *running = next;
        Ok(report)
    }

    /// Logs a refused reload (an auditor sees every attempt) and returns its error.
    async fn rejected(&self, problems: ConfigErrors) -> ReloadError {
        let listed: Vec<String> = problems.problems().iter().map(ToString::to_string).collect();
        let record = Record::new(RecordKind::ConfigRejected)
            .reason("reload refused; the running configuration stays in force")
            .detail(json!({"reason": "reload", "problems": listed}));
        if let Err(error) = self.gateway.audit().append(record).await {
            tracing::error!(%error, "could not record config_rejected");
        }
        ReloadError::Invalid(problems)
    }
}

/// Re-decides a call waiting on approval `id` against the policy set a reload put in
/// force: a deny now wins (the hold is cancelled, naming the policy change, and the call
/// answers so); an approval asked for again takes the new quorum and approvers when they
/// ask more (`Broker::tighten`); a looser outcome (allow, confirm, a lower quorum) keeps
/// the hold as it is, since people were already asked and a reload must never release a
/// call nobody approved.
pub(super) async fn redecide(gateway: &Gateway, call: &HeldCall<'_>, id: &ApprovalId, policy: &ActivePolicy) {
    let Verdict { decision, by, .. } = super::forward::decide(policy, call.tool, call.request.name.as_ref(), call.args, call.caller);
    let digest = policy.set.digest().set().to_string();
    let outcome = match decision.effect {
        Effect::Deny => {
            let reason = format!("the policy changed on reload ({digest}) and now denies it: {by}: {}", decision.reason);
            gateway.approvals().cancel(id, &reason).await
        }
        Effect::Approve => {
            let rule = decision.winning_rule.as_ref().map(|r| r.as_str());
            gateway.approvals().tighten(id, decision.approval.as_ref(), rule, &digest).await
        }
        Effect::Allow | Effect::Confirm => return,
    };
    if let Err(error) = outcome {
        tracing::error!(%error, approval = %id, "could not re-decide the held call after a reload");
    }
}

/// The `config_loaded` record (detail format agreed between helpers; `auditview` reads it).
fn loaded(reason: &str, running: &Running, policies: &PolicySet, changed: &[Change]) -> Record {
    let digest = policies.digest();
    let files: serde_json::Map<String, Value> =
        digest.files().iter().map(|(name, d)| (name.clone(), Value::from(d.to_string()))).collect();
    Record::new(RecordKind::ConfigLoaded).policy_sha256(digest.set()).detail(json!({
        "reason": reason,
        "policy_sha256": digest.set(),
        "config_sha256": running.config_sha256,
        "manifests": running.manifests,
        "policies": files,
        "changed": changed,
    }))
}

/// `airlock.toml` parsed, as JSON; `{}` for the built-in defaults or an unreadable file
/// (the loader reports those).
fn config_document(file: Option<&Path>) -> Value {
    file.and_then(toml_document).unwrap_or_else(|| json!({}))
}

/// A TOML file parsed into JSON: what digests are taken over, so whitespace and comments
/// never change one.
fn toml_document(file: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(file).ok()?;
    toml::from_str::<Value>(&text).ok()
}

/// Each manifest's digest (canonical form of its parsed file), by server name.
fn manifest_digests(manifests: &[Manifest]) -> BTreeMap<String, Sha256Digest> {
    manifests
        .iter()
        .map(|m| {
            let doc = toml_document(&m.file).unwrap_or(Value::Null);
            (m.name.as_str().to_owned(), Sha256Digest::of(&canonical(&doc)))
        })
        .collect()
}

/// Servers added, removed or changed between two digest maps, by name.
fn server_changes(old: &BTreeMap<String, Sha256Digest>, new: &BTreeMap<String, Sha256Digest>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (server, digest) in new {
        match old.get(server) {
            None => changes.push(Change::ServerAdded { server: server.clone() }),
            Some(before) if before != digest => changes.push(Change::ServerRestarted { server: server.clone() }),
            Some(_) => {}
        }
    }
    for server in old.keys().filter(|s| !new.contains_key(*s)) {
        changes.push(Change::ServerRemoved { server: server.clone() });
    }
    changes
}

/// `section.key` (or a top-level key) whose value differs between the running and the
/// new `airlock.toml`, leaving out the keys a reload applies.
fn restart_keys(running: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (old, new) = (running.as_object().unwrap_or(&empty), new.as_object().unwrap_or(&empty));
    let mut keys = Vec::new();
    let sections: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for section in sections {
        let (a, b) = (old.get(section), new.get(section));
        match (a.and_then(Value::as_object), b.and_then(Value::as_object)) {
            (Some(a), Some(b)) => {
                let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for name in names.into_iter().filter(|n| a.get(*n) != b.get(*n)) {
                    keys.push(format!("{section}.{name}"));
                }
            }
            _ if a != b => keys.push(section.clone()),
            _ => {}
        }
    }
    keys.retain(|k| !LIVE_KEYS.contains(&k.as_str()));
    keys
}

#[cfg(test)]
mod tests {
    use super::restart_keys;
    use serde_json::json;

    #[test]
    fn a_refused_reload_serialises_with_its_problems_as_check_prints_them() {
        let problem = crate::config::Problem { file: "policies/p.toml".into(), line: Some(4), message: "bad effect".into() };
        let error = super::ReloadError::Invalid(crate::config::ConfigErrors::from(problem));
        let value = serde_json::to_value(&error).expect("json");
        assert_eq!(value["error"], "invalid");
        assert_eq!(value["problems"], json!(["policies/p.toml:4: bad effect"]));
    }

    #[test]
    fn only_keys_that_apply_live_are_left_out_of_needs_restart() {
        let old = json!({"gateway": {"data_dir": "a", "policies": "p"}, "http": {"listen": "127.0.0.1:1"}});
        let new = json!({"gateway": {"data_dir": "b", "policies": "q"}, "audit": {"durability": "none"}});
        assert_eq!(restart_keys(&old, &new), vec!["audit", "gateway.data_dir", "http"]);
        assert!(restart_keys(&old, &old).is_empty());
    }
}
