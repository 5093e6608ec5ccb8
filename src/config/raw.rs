//! The raw form of `airlock.toml` (serde, `deny_unknown_fields`) and its validation into
//! the typed `Config`, one key at a time, keeping the default where a value is wrong.
//!
//! Owns: the `Raw*` structs and `Validator`.
//! Uses: the typed structs of `config`, the diagnostics in `diag`.
//! Must not: be seen outside `config`; nothing else reads raw strings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use super::diag::{ConfigErrors, Source};
use super::{
    ApprovalsConfig, AuditConfig, Durability, SinkConfig, EnvVarName, GatewayConfig, HttpConfig, NewTools,
    HttpWitnessConfig, IdentityConfig, OidcConfig, SlackConfig, StdioPrincipal, TeamsConfig, TokenConfig,
    WebConfig, WebOidcConfig, WitnessConfig, parse_duration, IdleExit, PeerRule,
};
// ---- raw, as written -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) gateway: Option<RawGateway>,
    pub(super) http: Option<RawHttp>,
    pub(super) audit: Option<RawAudit>,
    pub(super) identity: Option<RawIdentity>,
    pub(super) approvals: Option<RawApprovals>,
    pub(super) telemetry: Option<super::telemetry::RawTelemetry>,
    pub(super) storage: Option<Spanned<super::storage::RawStorage>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    data_dir: Option<Spanned<String>>,
    manifests: Option<Spanned<String>>,
    policies: Option<Spanned<String>>,
    separator: Option<Spanned<String>>,
    prefix_tools: Option<bool>,
    new_tools: Option<NewTools>,
    max_message_size: Option<Spanned<i64>>,
    socket_clients: Option<Vec<Spanned<String>>>,
    operators: Option<Vec<Spanned<String>>>,
    idle_exit: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: Option<Spanned<String>>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    allowed_origins: Option<Vec<Spanned<String>>>,
    public_url: Option<Spanned<String>>,
    check_host: Option<bool>,
    check_origin: Option<bool>,
    header_read_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_address: Option<Spanned<i64>>,
    max_body_mcp: Option<Spanned<String>>,
    max_body: Option<Spanned<String>>,
    max_sessions_per_principal: Option<Spanned<i64>>,
    max_sessions: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWitness {
    interval: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    http: Option<Vec<RawHttpWitness>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpWitness {
    url: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    durability: Option<Durability>,
    redact: Option<Vec<Spanned<String>>>,
    witness: Option<RawWitness>,
    key_path: Option<Spanned<String>>,
    sink: Option<Spanned<RawSink>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    url: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    batch: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) stdio_principal: Option<Spanned<String>>,
    pub(super) stdio_person: Option<Spanned<String>>,
    pub(super) tokens: Option<Vec<Spanned<RawToken>>>,
    pub(super) oidc: Option<Vec<Spanned<RawOidc>>>,
    failed_auth_limit: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    human: bool,
    pub(super) person: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    issuer: Option<Spanned<String>>,
    audience: Option<Spanned<String>>,
    groups_claim: Option<Spanned<String>>,
    jwks_url: Option<Spanned<String>>,
    #[serde(default)]
    human: bool,
    #[serde(default)]
    group_map: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) people: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApprovals {
    timeout: Option<Spanned<String>>,
    progress_every: Option<Spanned<String>>,
    default_approvers: Option<Vec<Spanned<String>>>,
    pub(super) slack: Option<Spanned<RawSlack>>,
    teams: Option<Spanned<RawTeams>>,
    pub(super) web: Option<Spanned<RawWeb>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    oidc_issuer: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret_env: Option<Spanned<String>>,
    session_lifetime: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    auditors: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlack {
    bot_token_env: Option<Spanned<String>>,
    signing_secret_env: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    api_base: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) users: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTeams {
    workflow_url_env: Option<Spanned<String>>,
}

/// Checks raw values one by one, recording each problem and keeping the default on error.
pub(super) struct Validator<'s, 'e> {
    pub(super) source: &'s Source<'s>,
    pub(super) errors: &'e mut ConfigErrors,
    pub(super) base_dir: &'s Path,
}

impl Validator<'_, '_> {
    pub(super) fn problem(&mut self, span: std::ops::Range<usize>, message: String) {
        self.errors.push(self.source.problem(Some(span), message));
    }

    pub(super) fn gateway(&mut self, raw: RawGateway, out: &mut GatewayConfig) {
        if let Some(p) = raw.data_dir {
            out.data_dir = self.base_dir.join(p.get_ref());
        }
        for (value, key, slot) in [
            (raw.manifests, "gateway.manifests", &mut out.manifests),
            (raw.policies, "gateway.policies", &mut out.policies),
        ] {
            let Some(value) = value else { continue };
            let dir = self.base_dir.join(value.get_ref());
            if !dir.is_dir() {
                let msg = format!(
                    "key \"{key}\": directory \"{}\" does not exist",
                    dir.display()
                );
                self.problem(value.span(), msg);
            }
            *slot = dir;
        }
        if let Some(sep) = raw.separator {
            let ok = !sep.get_ref().is_empty()
                && sep
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if ok {
                out.separator = sep.get_ref().clone();
            } else {
                let msg = "key \"gateway.separator\": must be non-empty and use only letters, \
                           digits, '_', '-' or '.' (characters allowed in MCP tool names)";
                self.problem(sep.span(), msg.to_string());
            }
        }
        if let Some(prefix) = raw.prefix_tools {
            out.prefix_tools = prefix;
        }
        if let Some(new_tools) = raw.new_tools {
            out.new_tools = new_tools;
        }
        if let Some(size) = raw.max_message_size {
            match usize::try_from(*size.get_ref()) {
                Ok(bytes) if bytes >= super::MIN_MESSAGE_SIZE => out.max_message_size = bytes,
                _ => {
                    let msg = format!(
                        "key \"gateway.max_message_size\": must be a number of bytes of at least {} (the default is {})",
                        super::MIN_MESSAGE_SIZE,
                        super::DEFAULT_MAX_MESSAGE_SIZE
                    );
                    self.problem(size.span(), msg);
                }
            }
        }
        self.peer_rules(raw.socket_clients, "gateway.socket_clients", &mut out.socket_clients);
        self.peer_rules(raw.operators, "gateway.operators", &mut out.operators);
        if let Some(idle) = raw.idle_exit {
            if idle.get_ref() == "never" {
                out.idle_exit = IdleExit::Never;
            } else if let Some(after) = self.duration(&idle, "gateway.idle_exit") {
                out.idle_exit = IdleExit::After(after);
            }
        }
    }

    fn peer_rules(&mut self, raw: Option<Vec<Spanned<String>>>, key: &str, out: &mut Vec<PeerRule>) {
        for entry in raw.into_iter().flatten() {
            match PeerRule::parse(entry.get_ref()) {
                Ok(rule) => out.push(rule),
                Err(problem) => self.problem(entry.span(), format!("key \"{key}\": {problem}")),
            }
        }
    }

    pub(super) fn http(&mut self, raw: RawHttp, out: &mut HttpConfig) {
        if let Some(listen) = raw.listen {
            match listen.get_ref().parse::<SocketAddr>() {
                Ok(addr) => out.listen = Some(addr),
                Err(_) => self.problem(
                    listen.span(),
                    format!(
                        "key \"http.listen\": \"{}\" is not an address like \"127.0.0.1:8787\"",
                        listen.get_ref()
                    ),
                ),
            }
        }
        if let Some(hosts) = raw.allowed_hosts {
            out.allowed_hosts = Vec::new();
            for host in hosts {
                match crate::http::HostPattern::parse(host.get_ref()) {
                    Ok(_) => out.allowed_hosts.push(host.into_inner()),
                    Err(why) => {
                        let msg = format!(
                            "key \"http.allowed_hosts\": \"{}\" is not a host like \"localhost\", \"10.0.0.5:8787\" or \"[::1]\" ({why})",
                            host.get_ref()
                        );
                        self.problem(host.span(), msg);
                    }
                }
            }
        }
        if let Some(origins) = raw.allowed_origins {
            out.allowed_origins = Vec::new();
            for origin in origins {
                let parsed = Url::parse(origin.get_ref());
                if parsed.as_ref().is_ok_and(|u| u.has_host()) {
                    out.allowed_origins
                        .push(origin.get_ref().trim_end_matches('/').to_string());
                } else {
                    let msg = format!(
                        "key \"http.allowed_origins\": \"{}\" is not an origin like \"https://app.example.com\"",
                        origin.get_ref()
                    );
                    self.problem(origin.span(), msg);
                }
            }
        }
        if let Some(url) = raw.public_url {
            out.public_url = self.http_url(&url, "http.public_url");
        }
        out.check_host = raw.check_host.unwrap_or(out.check_host);
        out.check_origin = raw.check_origin.unwrap_or(out.check_origin);
        let limits = super::limits::RawLimits {
            header_read_timeout: raw.header_read_timeout,
            idle_timeout: raw.idle_timeout,
            max_connections: raw.max_connections,
            max_connections_per_address: raw.max_connections_per_address,
            max_body_mcp: raw.max_body_mcp,
            max_body: raw.max_body,
            max_sessions_per_principal: raw.max_sessions_per_principal,
            max_sessions: raw.max_sessions,
        };
        self.http_limits(limits, &mut out.limits);
    }

    pub(super) fn audit(&mut self, raw: RawAudit, out: &mut AuditConfig) {
        if let Some(d) = raw.durability {
            out.durability = d;
        }
        if let Some(path) = raw.key_path {
            out.key_path = Some(self.base_dir.join(path.get_ref()));
        }
        if let Some(witness) = raw.witness {
            out.witness = Some(self.witness(witness));
        }
        if let Some(sink) = raw.sink {
            out.sink = self.sink(sink);
        }
        if let Some(pointers) = raw.redact {
            // Set, the list replaces the default (`**/password` and friends).
            out.redact.clear();
            for pointer in pointers {
                match crate::audit::Redactor::check(pointer.get_ref()) {
                    Ok(()) => out.redact.push(pointer.into_inner()),
                    Err(why) => {
                        self.problem(pointer.span(), format!("key \"audit.redact\": {why}"));
                    }
                }
            }
        }
    }

    fn witness(&mut self, raw: RawWitness) -> WitnessConfig {
        let mut out = WitnessConfig {
            interval: Duration::from_secs(60),
            dir: None,
            http: Vec::new(),
        };
        if let Some(interval) = &raw.interval
            && let Some(d) = self.duration(interval, "audit.witness.interval")
        {
            out.interval = d;
        }
        if let Some(dir) = raw.dir {
            out.dir = Some(self.base_dir.join(dir.get_ref()));
        }
        for w in raw.http.unwrap_or_default() {
            let url = self.http_url(&w.url, "audit.witness.http.url");
            if let Err(why) = crate::audit::VerifierKey::parse(w.key.get_ref()) {
                self.problem(w.key.span(), format!("key \"audit.witness.http.key\": {why} (the witness prints its key when it starts)"));
                continue;
            }
            if let Some(url) = url {
                out.http.push(HttpWitnessConfig { url, key: w.key.get_ref().trim().to_owned() });
            }
        }
        out
    }

    fn sink(&mut self, raw: Spanned<RawSink>) -> Option<SinkConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let url = self.required(raw.url, span, "audit.sink", "url");
        let url = url.and_then(|u| self.http_url(&u, "audit.sink.url"));
        let mut format = crate::feed::Format::Jsonl;
        if let Some(f) = &raw.format {
            match crate::feed::Format::parse(f.get_ref()) {
                Some(parsed) => format = parsed,
                None => self.problem(f.span(), format!("key \"audit.sink.format\": \"{}\" is not \"jsonl\" or \"ocsf\"", f.get_ref())),
            }
        }
        let token_env = raw.token_env.and_then(|v| self.env_name(&v, "audit.sink.token_env"));
        let mut batch = 500;
        if let Some(b) = &raw.batch {
            match usize::try_from(*b.get_ref()) {
                Ok(n @ 1..=10_000) => batch = n,
                _ => self.problem(b.span(), "key \"audit.sink.batch\": must be 1 to 10000 records".into()),
            }
        }
        Some(SinkConfig { url: url?, format, token_env, batch })
    }

    pub(super) fn identity(&mut self, raw: RawIdentity, out: &mut IdentityConfig) {
        if let Some(p) = raw.stdio_principal {
            let text = p.get_ref().trim();
            if let Some(var) = text.strip_prefix("env:") {
                match EnvVarName::new(var) {
                    Ok(var) => out.stdio_principal = StdioPrincipal::Env(var),
                    Err(why) => {
                        self.problem(p.span(), format!("key \"identity.stdio_principal\": {why}"))
                    }
                }
            } else if text.is_empty() {
                let msg = "key \"identity.stdio_principal\": must be a name or \"env:VARIABLE\"";
                self.problem(p.span(), msg.to_string());
            } else {
                out.stdio_principal = StdioPrincipal::Fixed(text.to_string());
            }
        }
        if let Some(person) = raw.stdio_person {
            match crate::identity::Person::new(person.get_ref().as_str()) {
                Ok(_) => out.stdio_person = Some(person.into_inner()),
                Err(why) => self.problem(person.span(), format!("key \"identity.stdio_person\": {why}")),
            }
        }
        for token in raw.tokens.unwrap_or_default() {
            let span = token.span();
            let token = token.into_inner();
            let name = self.required(token.name, span.clone(), "identity.tokens", "name");
            let digest = self.required(token.sha256, span, "identity.tokens", "sha256");
            let digest = digest.and_then(|d| self.sha256(&d));
            if let (Some(name), Some(sha256)) = (name, digest) {
                if out.tokens.iter().any(|t| t.name == *name.get_ref()) {
                    let msg = format!(
                        "key \"identity.tokens\": a token named \"{}\" is already defined",
                        name.get_ref()
                    );
                    self.problem(name.span(), msg);
                }
                out.tokens.push(TokenConfig {
                    name: name.into_inner(),
                    sha256,
                    groups: token.groups,
                    human: token.human,
                    person: token.person.map(Spanned::into_inner),
                });
            }
        }
        for oidc in raw.oidc.unwrap_or_default() {
            let span = oidc.span();
            let oidc = oidc.into_inner();
            let issuer = self.required(oidc.issuer, span.clone(), "identity.oidc", "issuer");
            let issuer = issuer.and_then(|i| self.http_url(&i, "identity.oidc.issuer"));
            let audience = self.required(oidc.audience, span, "identity.oidc", "audience");
            let jwks_url = oidc
                .jwks_url
                .and_then(|u| self.http_url(&u, "identity.oidc.jwks_url"));
            let groups_claim = oidc
                .groups_claim
                .map_or_else(|| "groups".to_string(), Spanned::into_inner);
            if let (Some(issuer), Some(audience)) = (issuer, audience) {
                let audience = audience.into_inner();
                out.oidc.push(OidcConfig {
                    issuer,
                    audience,
                    groups_claim,
                    jwks_url,
                    human: oidc.human,
                    group_map: oidc.group_map,
                    people: oidc.people.into_iter().map(|(k, v)| (k, v.into_inner())).collect(),
                });
            }
        }
        if let Some(limit) = raw.failed_auth_limit {
            match u32::try_from(*limit.get_ref()).ok().and_then(std::num::NonZeroU32::new) {
                Some(n) => out.failed_auth_limit = n,
                None => self.problem(
                    limit.span(),
                    "key \"identity.failed_auth_limit\": must be a whole number of failures per minute, at least 1".into(),
                ),
            }
        }
    }

    pub(super) fn approvals(&mut self, raw: RawApprovals, out: &mut ApprovalsConfig) {
        if let Some(t) = raw.timeout {
            out.timeout = self
                .duration(&t, "approvals.timeout")
                .unwrap_or(out.timeout);
        }
        if let Some(t) = raw.progress_every {
            out.progress_every = self
                .duration(&t, "approvals.progress_every")
                .unwrap_or(out.progress_every);
        }
        for approver in raw.default_approvers.unwrap_or_default() {
            let text = approver.get_ref();
            match text.split_once(':') {
                Some(("group" | "user", name)) if !name.trim().is_empty() => out.default_approvers.push(text.clone()),
                _ => self.problem(
                    approver.span(),
                    format!("approvals.default_approvers: \"{text}\" is not \"group:NAME\" or \"user:NAME\""),
                ),
            }
        }
        if let Some(slack) = raw.slack {
            let span = slack.span();
            let s = slack.into_inner();
            let t = "approvals.slack";
            let bot = self.required(s.bot_token_env, span.clone(), t, "bot_token_env");
            let bot = bot.and_then(|v| self.env_name(&v, "approvals.slack.bot_token_env"));
            let secret = self.required(s.signing_secret_env, span.clone(), t, "signing_secret_env");
            let secret =
                secret.and_then(|v| self.env_name(&v, "approvals.slack.signing_secret_env"));
            let channel = self.required(s.channel, span, t, "channel");
            let api_base = match s.api_base {
                Some(u) => self.http_url(&u, "approvals.slack.api_base"),
                None => Url::parse("https://slack.com/api").ok(),
            };
            if let (Some(bot_token_env), Some(signing_secret_env), Some(channel), Some(api_base)) =
                (bot, secret, channel, api_base)
            {
                let channel = channel.into_inner();
                let users = s.users.into_iter().map(|(k, v)| (k, v.into_inner())).collect();
                out.slack = Some(SlackConfig {
                    bot_token_env,
                    signing_secret_env,
                    channel,
                    api_base,
                    users,
                });
            }
        }
        if let Some(teams) = raw.teams {
            let span = teams.span();
            let var = self.required(
                teams.into_inner().workflow_url_env,
                span,
                "approvals.teams",
                "workflow_url_env",
            );
            if let Some(workflow_url_env) =
                var.and_then(|v| self.env_name(&v, "approvals.teams.workflow_url_env"))
            {
                out.teams = Some(TeamsConfig { workflow_url_env });
            }
        }
    }

    /// `[approvals.web]`: the issuer must be a configured `[[identity.oidc]]` one, since
    /// the sign-in's ID tokens are verified with its keys.
    pub(super) fn approvals_web(&mut self, raw: Option<Spanned<RawWeb>>, identity: &IdentityConfig, out: &mut WebConfig) {
        let Some(raw) = raw else { return };
        let span = raw.span();
        let w = raw.into_inner();
        if let Some(t) = w.idle_timeout {
            out.idle_timeout = self.duration(&t, "approvals.web.idle_timeout").unwrap_or(out.idle_timeout);
        }
        if let Some(t) = w.session_lifetime {
            out.session_lifetime = self.duration(&t, "approvals.web.session_lifetime").unwrap_or(out.session_lifetime);
        }
        for auditor in w.auditors.unwrap_or_default() {
            match crate::policy::parse_approver(auditor.get_ref()) {
                Ok(_) => out.auditors.push(auditor.into_inner()),
                Err(why) => self.problem(auditor.span(), format!("approvals.web.auditors: {why}")),
            }
        }
        let secret = w.client_secret_env.and_then(|v| self.env_name(&v, "approvals.web.client_secret_env"));
        if w.oidc_issuer.is_none() && w.client_id.is_none() {
            if secret.is_some() {
                self.problem(span, "[approvals.web] client_secret_env needs oidc_issuer and client_id".to_string());
            }
            return;
        }
        let t = "approvals.web";
        let issuer = self.required(w.oidc_issuer, span.clone(), t, "oidc_issuer");
        let client_id = self.required(w.client_id, span, t, "client_id");
        let issuer = issuer.and_then(|i| {
            let url = self.http_url(&i, "approvals.web.oidc_issuer")?;
            if identity.oidc.iter().any(|o| o.issuer == url) {
                return Some(url);
            }
            let msg = format!(
                "key \"approvals.web.oidc_issuer\": \"{}\" is not an [[identity.oidc]] issuer; add one with \
                 that issuer (its keys verify the sign-in's ID tokens)",
                i.get_ref()
            );
            self.problem(i.span(), msg);
            None
        });
        let client_id = client_id.and_then(|c| {
            if c.get_ref().trim().is_empty() {
                self.problem(c.span(), "key \"approvals.web.client_id\": must not be empty".to_string());
                return None;
            }
            Some(c.into_inner())
        });
        if let (Some(issuer), Some(client_id)) = (issuer, client_id) {
            out.oidc = Some(WebOidcConfig { issuer, client_id, client_secret_env: secret });
        }
    }

    /// A key the table must have; reports it at the table's position when absent.
    pub(super) fn required<T>(
        &mut self,
        value: Option<Spanned<T>>,
        table_span: std::ops::Range<usize>,
        table: &str,
        key: &str,
    ) -> Option<Spanned<T>> {
        if value.is_none() {
            let problem = self.source.problem(
                Some(table_span.clone()),
                format!("[{table}] needs the key \"{key}\""),
            );
            self.errors.push_missing(table_span, &[key], problem);
        }
        value
    }

    pub(super) fn duration(&mut self, value: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(why) => {
                self.problem(value.span(), format!("key \"{key}\": {why}"));
                None
            }
        }
    }

    pub(super) fn http_url(&mut self, value: &Spanned<String>, key: &str) -> Option<Url> {
        match Url::parse(value.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
            _ => {
                let msg = format!(
                    "key \"{key}\": \"{}\" is not an http(s) URL",
                    value.get_ref()
                );
                self.problem(value.span(), msg);
                None
            }
        }
    }

    pub(super) fn env_name(&mut self, value: &Spanned<String>, key: &str) -> Option<EnvVarName> {
        match EnvVarName::new(value.get_ref()) {
            Ok(v) => Some(v),
            Err(why) => {
                self.problem(value.span(), format!("key \"{key}\": {why}"));
                None
            }
        }
    }

    fn sha256(&mut self, value: &Spanned<String>) -> Option<[u8; 32]> {
        let bytes = hex::decode(value.get_ref().trim()).ok();
        match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(d) => Some(d),
            None => {
                let msg = "key \"identity.tokens.sha256\": must be 64 hex digits, the SHA-256 of \
                           the token (e.g. `printf %s TOKEN | sha256sum`)";
                self.problem(value.span(), msg.to_string());
                None
            }
        }
    }
}
