//! Turning checked config into the values the pipeline modules take. Plain mapping, no
//! decisions: those were made when the config was validated.

use crate::audit;
use crate::approval::outbound::Secret;
use crate::approval::slack::SlackSettings;
use crate::approval::teams::TeamsSettings;
use crate::config::{Config, Durability, GatewayConfig, HttpConfig, IdentityConfig, SlackConfig, StdioPrincipal, TeamsConfig};
use crate::downstream::{Catalog, Downstreams, Namespacing};
use crate::http::{HostGuard, HostPattern};
use crate::identity;

/// Starts the downstreams, reads their catalog and stops them again (no tool is called):
/// what `tools list` and `explain` classify against.
pub(crate) fn live_catalog(checked: &super::check::Checked) -> anyhow::Result<std::sync::Arc<Catalog>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let namespacing = namespacing(&checked.config.gateway);
    Ok(runtime.block_on(async {
        let downstreams = Downstreams::start(checked.manifests.clone(), namespacing).await;
        let catalog = downstreams.catalog();
        downstreams.shutdown();
        catalog
    }))
}

/// `[gateway] separator` / `prefix_tools` → how exposed names are formed.
pub(crate) fn namespacing(gateway: &GatewayConfig) -> Namespacing {
    if gateway.prefix_tools {
        Namespacing::Prefix { separator: gateway.separator.clone() }
    } else {
        Namespacing::None
    }
}

/// `[http]` → the Host/Origin guard. `check_host = false` accepts any Host;
/// `check_origin = false` accepts any Origin.
pub(crate) fn host_guard(http: &HttpConfig) -> HostGuard {
    HostGuard {
        // An empty list accepts any host; entries `airlock check` refused never match.
        allowed_hosts: (http.check_host && !http.allowed_hosts.is_empty())
            .then(|| http.allowed_hosts.iter().filter_map(|h| HostPattern::parse(h).ok()).collect()),
        allowed_origins: http.allowed_origins.clone(),
        check_origin: http.check_origin,
    }
}

/// `[audit]` → how the log is opened.
pub(crate) fn audit(config: &Config) -> audit::AuditConfig {
    let mut audit = audit::AuditConfig::new(&config.gateway.data_dir);
    audit.durability = match config.audit.durability {
        Durability::Fsync => audit::Durability::Fsync,
        Durability::None => audit::Durability::None,
    };
    audit.redact = config.audit.redact.clone();
    audit.key_path = config.audit.key_path.clone();
    audit
}

/// `[storage]` + `[audit]` → the open log: sled in the data dir, or PostgreSQL shared
/// with other replicas.
pub(crate) fn open_audit(config: &Config) -> anyhow::Result<audit::AuditLog> {
    Ok(match &config.storage.backend {
        crate::storage::Backend::Sled => audit::AuditLog::open(self::audit(config))?,
        crate::storage::Backend::Postgres(settings) => crate::storage::open_log(settings, self::audit(config))?,
    })
}

/// `[identity]` → the authenticator's config.
pub(crate) fn identity(config: &IdentityConfig) -> identity::IdentityConfig {
    let stdio_principal = match &config.stdio_principal {
        // The default spec; identity falls back to "stdio" when USER is unset (CI, containers).
        StdioPrincipal::Env(var) if var.as_str() == "USER" => None,
        StdioPrincipal::Env(var) => Some(format!("env:{}", var.as_str())),
        StdioPrincipal::Fixed(name) => Some(name.clone()),
    };
    identity::IdentityConfig {
        stdio_person: config.stdio_person.clone(),
        stdio_principal,
        tokens: config
            .tokens
            .iter()
            .map(|t| identity::TokenEntry {
                name: t.name.clone(),
                sha256: hex::encode(t.sha256),
                groups: t.groups.clone(),
                holder: holder(t.human),
                person: t.person.clone(),
            })
            .collect(),
        oidc: config
            .oidc
            .iter()
            .map(|o| identity::OidcIssuer {
                // `Url` adds a `/` to a bare origin; issuers are compared exactly, and
                // most (Google, Okta) have none.
                issuer: issuer_text(&o.issuer),
                audience: o.audience.clone(),
                groups_claim: Some(o.groups_claim.clone()).filter(|c| !c.is_empty()),
                jwks_uri: o.jwks_url.as_ref().map(|u| u.to_string()),
                holder: holder(o.human),
                group_map: o.group_map.clone(),
                people: o.people.clone(),
            })
            .collect(),
        throttle: identity::ThrottleSettings { failures_per_minute: config.failed_auth_limit },
        ..identity::IdentityConfig::default()
    }
}

/// `human = true` in the config → who holds the credential.
fn holder(human: bool) -> identity::Holder {
    if human { identity::Holder::Human } else { identity::Holder::Unverified }
}

fn issuer_text(url: &url::Url) -> String {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() { text.trim_end_matches('/').to_owned() } else { text.to_owned() }
}

/// `[approvals.slack]` → the Slack channel's settings: the two secrets read from their
/// variables now (a missing one stops `serve` with the variable's name), and each mapped
/// Slack user resolved to a caller with the groups of the `[[identity.tokens]]` entry of
/// the same name, if there is one.
pub(crate) fn slack(slack: &SlackConfig, identity: &IdentityConfig, public_url: Option<&str>) -> anyhow::Result<SlackSettings> {
    let mut users = std::collections::BTreeMap::new();
    for (slack_user, name) in &slack.users {
        let principal = identity::Principal::new(name.as_str())
            .map_err(|e| anyhow::anyhow!("approvals.slack.users.{slack_user}: {e}"))?;
        let token = identity.tokens.iter().find(|t| t.name == *name);
        let groups = token.map(|t| t.groups.clone()).unwrap_or_default();
        let person = token
            .and_then(|t| t.person.as_deref())
            .map(identity::Person::new)
            .transpose()
            .map_err(|e| anyhow::anyhow!("approvals.slack.users.{slack_user}: {e}"))?;
        // A click in Slack is a person's: Slack signed the request for that user.
        let caller = identity::Caller {
            person,
            holder: identity::Holder::Human,
            ..identity::Caller::new(principal, groups, identity::AuthMethod::Slack)
        };
        users.insert(slack_user.clone(), caller);
    }
    Ok(SlackSettings {
        bot_token: secret_from(slack.bot_token_env.as_str(), "approvals.slack.bot_token_env")?,
        signing_secret: secret_from(slack.signing_secret_env.as_str(), "approvals.slack.signing_secret_env")?,
        channel: slack.channel.clone(),
        api_base: slack.api_base.as_str().trim_end_matches('/').to_owned(),
        users,
        public_url: public_url.map(str::to_owned),
    })
}

/// `[approvals.teams]` → the Teams channel's settings (the webhook URL read now).
pub(crate) fn teams(teams: &TeamsConfig, public_url: &str) -> anyhow::Result<TeamsSettings> {
    Ok(TeamsSettings {
        workflow_url: secret_from(teams.workflow_url_env.as_str(), "approvals.teams.workflow_url_env")?,
        public_url: public_url.trim_end_matches('/').to_owned(),
    })
}

/// A secret from the environment; the error names the variable and the key, never a value.
fn secret_from(var: &str, key: &str) -> anyhow::Result<Secret> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
        _ => anyhow::bail!("{key}: environment variable {var} is not set"),
    }
}

/// `[approvals.web]` → the approver page. The client secret is read from its variable here,
/// at start, so a missing one stops the gateway instead of failing every sign-in.
pub(crate) fn web(
    config: &crate::config::WebConfig,
    broker: crate::approval::Broker,
    authenticator: std::sync::Arc<identity::Authenticator>,
    public_url: &str,
) -> anyhow::Result<crate::approval::web::Web> {
    use crate::approval::web::{OidcClientSettings, Web, WebSettings};
    let oidc = match &config.oidc {
        Some(oidc) => {
            let client_secret = match &oidc.client_secret_env {
                Some(var) => Some(var.get().ok_or_else(|| {
                    anyhow::anyhow!("approvals.web.client_secret_env: environment variable {} is not set", var.as_str())
                })?),
                None => None,
            };
            Some(OidcClientSettings { issuer: issuer_text(&oidc.issuer), client_id: oidc.client_id.clone(), client_secret })
        }
        None => None,
    };
    let settings = WebSettings {
        public_url: public_url.to_owned(),
        oidc,
        session_lifetime: config.session_lifetime,
        idle_timeout: config.idle_timeout,
    };
    Ok(Web::new(broker, authenticator, settings)?)
}

/// `[approvals.web] auditors` → the audit view over the running log, beside the page.
pub(crate) fn audit_view(
    config: &Config,
    web: crate::approval::web::Web,
    audit: audit::AuditLog,
) -> anyhow::Result<crate::audit_view::AuditView> {
    Ok(crate::audit_view::AuditView::new(web, audit, &config.gateway.data_dir, &config.approvals.web.auditors)?)
}

/// `[audit.witness]` → where the publisher sends checkpoints (`None`: nowhere).
pub(crate) fn witness(config: &Config) -> anyhow::Result<Option<crate::witness::publish::Settings>> {
    let Some(w) = &config.audit.witness else { return Ok(None) };
    let mut http = Vec::new();
    for h in &w.http {
        http.push((h.url.clone(), audit::VerifierKey::parse(&h.key)?));
    }
    let paths = audit::LogPaths::new(&config.gateway.data_dir, None);
    Ok(Some(crate::witness::publish::Settings {
        interval: w.interval,
        dir: w.dir.clone(),
        http,
        witnessed: audit::witnessed_dir(&paths),
    }))
}

/// `[audit.sink]` as the sink takes it; the token is read from its variable now.
pub(crate) fn sink(config: &Config) -> anyhow::Result<Option<crate::feed::sink::Settings>> {
    let Some(s) = &config.audit.sink else { return Ok(None) };
    let token = match &s.token_env {
        Some(var) => Some(crate::approval::outbound::Secret::new(var.get().ok_or_else(|| {
            anyhow::anyhow!("[audit.sink] token_env names {}, which is not set", var.as_str())
        })?)),
        None => None,
    };
    Ok(Some(crate::feed::sink::Settings { url: s.url.clone(), format: s.format, token, batch: s.batch }))
}
