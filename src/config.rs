//! `airlock.toml`: loading, defaults, and validation with line-accurate errors (DESIGN.md §2).
//!
//! Owns: the `Raw*` structs (serde, `deny_unknown_fields`), their validation into the typed
//! `Config`, resolution of relative paths against the config file's directory, and the
//! diagnostics shared by every file a user writes (`ConfigErrors`, `Problem`).
//! Uses: toml / toml_edit for spans, humantime, url.
//! Must not: read manifests or policies (their owners do), open sockets, or start anything.
//!
//! Every key is optional; with no config file at all the built-in defaults apply. One load
//! reports every problem, each as `file:line: message`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

mod diag;
mod limits;
mod names;
mod raw;
mod storage;
mod telemetry;
pub use diag::{ConfigErrors, Problem, Source, deserialize_all, suggestion};

/// The file looked for in the current directory when `--config` is not given.
pub const DEFAULT_FILE: &str = "airlock.toml";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from; `None` for built-in defaults.
    pub file: Option<PathBuf>,
    /// Directory that relative paths were resolved against (the config file's directory).
    pub base_dir: PathBuf,
    /// `[gateway]`.
    pub gateway: GatewayConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[identity]`.
    pub identity: IdentityConfig,
    /// `[approvals]`.
    pub approvals: ApprovalsConfig,
    /// `[telemetry]`.
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// `[storage]`.
    pub storage: crate::storage::StorageConfig,
}

/// `[gateway]`: where things live and how tools are named.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// sled database, signing key, checkpoint file. Default `airlock-data`.
    pub data_dir: PathBuf,
    /// Directory of `*.toml` tool manifests. Default `tool-manifests`.
    pub manifests: PathBuf,
    /// Directory of `*.toml` policy files. Default `policies`.
    pub policies: PathBuf,
    /// Exposed name = `<server><separator><tool>`. Default `__`.
    pub separator: String,
    /// `false` exposes downstream tool names unprefixed; two servers offering the same name
    /// is then a startup error. Default `true`.
    pub prefix_tools: bool,
    /// Longest JSON-RPC message accepted on the stdio transport, in bytes; a longer line
    /// is discarded unread and answered with -32600. Default 16 MiB.
    pub max_message_size: usize,
    /// What a tool a downstream adds while the gateway runs is. Default `Trust`.
    pub new_tools: NewTools,
    /// Local users and groups, besides the gateway's own user, admitted to the control
    /// socket (`socket_clients`). Default none: the socket is 0600.
    pub socket_clients: Vec<PeerRule>,
    /// Local users and groups, besides the gateway's own user, allowed operator commands
    /// on the control socket (`operators`). Default none.
    pub operators: Vec<PeerRule>,
    /// How long the gateway stays up with no attached client and no held call
    /// (`idle_exit`). Default [`DEFAULT_IDLE_EXIT`].
    pub idle_exit: IdleExit,
}

/// One entry of `[gateway] socket_clients` or `operators`: a local user or group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRule {
    /// `user:<name>`.
    User(String),
    /// `group:<name>`: every user whose primary or supplementary group it is.
    Group(String),
}

impl PeerRule {
    /// Parses `user:<name>` or `group:<name>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, name) = text.split_once(':').ok_or_else(|| format!("\"{text}\" must be \"user:<name>\" or \"group:<name>\""))?;
        let valid = !name.is_empty()
            && name.len() <= 256
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c));
        if !valid {
            return Err(format!("\"{text}\": \"{name}\" is not a local user or group name"));
        }
        match kind {
            "user" => Ok(Self::User(name.to_owned())),
            "group" => Ok(Self::Group(name.to_owned())),
            _ => Err(format!("\"{text}\" must be \"user:<name>\" or \"group:<name>\"")),
        }
    }
}

/// `[gateway] idle_exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleExit {
    /// Exit after this long with no attached client and no held call.
    After(Duration),
    /// `"never"`: run until stopped (a permanent gateway, e.g. under systemd).
    Never,
}

/// Default `[gateway] idle_exit`: five minutes, so a client that restarts finds the
/// gateway (and its downstreams) still warm.
pub const DEFAULT_IDLE_EXIT: Duration = Duration::from_secs(300);

/// `[gateway] new_tools`: how a tool added at run time (after its server's first tool
/// list) comes in. Either way it is logged (`tool_added`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewTools {
    /// Trusted on first sight, like the tools of a server's first list (default).
    Trust,
    /// `critical` until an operator accepts it (`airlock tools accept NAME`).
    Hold,
}

/// Default `[gateway] max_message_size`: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// Smallest accepted `[gateway] max_message_size`: an `initialize` must fit.
pub const MIN_MESSAGE_SIZE: usize = 4096;

/// `[http]`: the HTTP listener and its request checks.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Listen address; HTTP is off unless this or `--http` is given.
    pub listen: Option<SocketAddr>,
    /// Accepted `Host` header names (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// Accepted `Origin` values besides those of allowed hosts.
    pub allowed_origins: Vec<String>,
    /// Public base URL used in links on approval cards.
    pub public_url: Option<Url>,
    /// Check `Host` against `allowed_hosts`. Default `true`.
    pub check_host: bool,
    /// Check `Origin` when a request carries one. Default `true`.
    pub check_origin: bool,
    /// Connection, body and session limits.
    pub limits: HttpLimits,
}

/// `[http]` limits that keep slow or greedy clients from taking the listener down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive within this (HTTP/1; also ends an idle keep-alive
    /// connection). Default 10 s.
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Open connections at once. Default 512.
    pub max_connections: usize,
    /// Open connections at once from one client IP address. Default 64.
    pub max_connections_per_address: usize,
    /// Request body bytes on `/mcp` and `/message`. Default 4 MiB.
    pub max_body_mcp: usize,
    /// Request body bytes everywhere else (`/api`, `/slack`, `/approvals`). Default 256 KiB.
    pub max_body: usize,
    /// Open streamable-HTTP sessions per principal. Default 64.
    pub max_sessions_per_principal: usize,
    /// Open streamable-HTTP sessions in all. Default 1024.
    pub max_sessions: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_address: 64,
            max_body_mcp: 4 << 20,
            max_body: 256 << 10,
            max_sessions_per_principal: 64,
            max_sessions: 1024,
        }
    }
}

/// How the audit writer makes records durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Group commit, fsync before acknowledging (default).
    Fsync,
    /// No fsync; for benchmarks and throwaway runs.
    None,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Default `Fsync`.
    pub durability: Durability,
    /// Pointers into the arguments whose values are stored and shown as `"[redacted]"`
    /// (`*` one level, `**` any depth); default `**/password`, `**/token`, `**/secret`,
    /// `**/api_key`.
    pub redact: Vec<String>,
    /// The Ed25519 signing key (PKCS#8); `None`: `<data_dir>/audit-key`, made on first start.
    pub key_path: Option<PathBuf>,
    /// `[audit.witness]`: where new checkpoints are published; `None`: nowhere.
    pub witness: Option<WitnessConfig>,
    /// `[audit.sink]`: an HTTP collector that gets every record; `None`: none.
    pub sink: Option<SinkConfig>,
}

/// `[audit.sink]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Where batches are POSTed.
    pub url: Url,
    /// `jsonl` (stored records, the default) or `ocsf`.
    pub format: crate::feed::Format,
    /// The variable holding a bearer token for the collector, if it wants one.
    pub token_env: Option<EnvVarName>,
    /// Most records per POST (default 500).
    pub batch: usize,
}

/// `[audit.witness]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WitnessConfig {
    /// Publish at most this often (and once at shutdown). Default 1 minute.
    pub interval: Duration,
    /// A directory (a mount of another machine, a write-once bucket) that gets one note
    /// file per published checkpoint.
    pub dir: Option<PathBuf>,
    /// C2SP tlog-witness endpoints.
    pub http: Vec<HttpWitnessConfig>,
}

/// One `[[audit.witness.http]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpWitnessConfig {
    /// The submission prefix; checkpoints go to `<url>/add-checkpoint`.
    pub url: Url,
    /// The witness's verifier key (`name+hash+base64`), checked when loading.
    pub key: String,
}

/// Who the stdio caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioPrincipal {
    /// `env:NAME`: the value of an environment variable, read at start.
    Env(EnvVarName),
    /// A fixed name.
    Fixed(String),
}

impl StdioPrincipal {
    /// The principal name, or `None` when the variable is unset or empty.
    pub fn resolve(&self) -> Option<String> {
        match self {
            StdioPrincipal::Env(var) => var.get(),
            StdioPrincipal::Fixed(name) => Some(name.clone()),
        }
    }
}

/// The name of an environment variable (`[A-Za-z_][A-Za-z0-9_]*`); secrets are referenced
/// by variable, never written into the config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvVarName(String);

impl EnvVarName {
    /// Validates a variable name.
    pub fn new(name: &str) -> Result<EnvVarName, String> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(EnvVarName(name.to_string()))
        } else {
            Err(format!("\"{name}\" is not an environment variable name"))
        }
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The variable's value, if set and not empty.
    pub fn get(&self) -> Option<String> {
        std::env::var(&self.0).ok().filter(|v| !v.is_empty())
    }
}

/// `[identity]`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// Default `env:USER`.
    pub stdio_principal: StdioPrincipal,
    /// The person behind the stdio caller. Default none.
    pub stdio_person: Option<String>,
    /// `[[identity.tokens]]`.
    pub tokens: Vec<TokenConfig>,
    /// `[[identity.oidc]]`.
    pub oidc: Vec<OidcConfig>,
    /// Refused credentials a client address may present per minute before it is answered
    /// 429. Default 20.
    pub failed_auth_limit: std::num::NonZeroU32,
}

impl IdentityConfig {
    /// True when HTTP callers must present credentials.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || !self.oidc.is_empty()
    }
}

/// A static bearer token, stored as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The principal the token authenticates.
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// Groups of that principal.
    pub groups: Vec<String>,
    /// Only a person holds this token: it may confirm its own holds out of band.
    pub human: bool,
    /// The person behind the token: their identities count once toward a quorum.
    pub person: Option<String>,
}

/// An OIDC issuer whose JWTs are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Must equal the token's `iss`.
    pub issuer: Url,
    /// Must be in the token's `aud`.
    pub audience: String,
    /// Claim holding the caller's groups. Default `groups`.
    pub groups_claim: String,
    /// JWKS location; default: discovered from `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: Option<Url>,
    /// Bearer JWTs of this issuer are held by people only.
    pub human: bool,
    /// Claim value → gateway-wide group; other groups are `{issuer}#{group}`.
    pub group_map: BTreeMap<String, String>,
    /// `sub` → person.
    pub people: BTreeMap<String, String>,
}

/// `[approvals]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalsConfig {
    /// How long a hold waits when no rule says otherwise. Default 15 minutes.
    pub timeout: Duration,
    /// Interval of progress notifications while waiting. Default 10 seconds.
    pub progress_every: Duration,
    /// Who may approve when no matching rule names approvers (`group:NAME` / `user:NAME`).
    /// Empty (the default): any authenticated identity but the caller.
    pub default_approvers: Vec<String>,
    /// `[approvals.slack]`.
    pub slack: Option<SlackConfig>,
    /// `[approvals.teams]`.
    pub teams: Option<TeamsConfig>,
    /// `[approvals.web]`.
    pub web: WebConfig,
}

/// `[approvals.web]`: how approvers sign in to the `/approvals` pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// OpenID Connect sign-in; `None`: only bearer tokens sign in.
    pub oidc: Option<WebOidcConfig>,
    /// How long a sign-in lasts. Default 8 hours.
    pub session_lifetime: Duration,
    /// A sign-in unused this long ends. Default 30 minutes.
    pub idle_timeout: Duration,
    /// Who may open the audit view at `/audit` (`group:NAME` / `user:NAME`, checked).
    /// Default: nobody.
    pub auditors: Vec<String>,
}

/// The OpenID Connect client the approver page signs people in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOidcConfig {
    /// One of the `[[identity.oidc]]` issuers: its keys verify the ID tokens.
    pub issuer: Url,
    /// This gateway's client id at the issuer.
    pub client_id: String,
    /// Variable holding the client secret; `None`: a public client (PKCE only).
    pub client_secret_env: Option<EnvVarName>,
}

/// `[approvals.slack]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackConfig {
    /// Variable holding the bot token (`xoxb-…`).
    pub bot_token_env: EnvVarName,
    /// Variable holding the signing secret.
    pub signing_secret_env: EnvVarName,
    /// Channel id messages are posted to.
    pub channel: String,
    /// Web API base. Default `https://slack.com/api`.
    pub api_base: Url,
    /// Slack user id → principal.
    pub users: BTreeMap<String, String>,
}

/// `[approvals.teams]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsConfig {
    /// Variable holding the Workflows webhook URL.
    pub workflow_url_env: EnvVarName,
}

// ---- loading ---------------------------------------------------------------------------

impl Config {
    /// Built-in defaults, with relative paths under `base_dir`.
    pub fn defaults_in(base_dir: &Path) -> Config {
        Config {
            file: None,
            base_dir: base_dir.to_path_buf(),
            gateway: GatewayConfig {
                data_dir: base_dir.join("airlock-data"),
                manifests: base_dir.join("tool-manifests"),
                policies: base_dir.join("policies"),
                separator: "__".to_string(),
                prefix_tools: true,
                new_tools: NewTools::Trust,
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                socket_clients: Vec::new(),
                operators: Vec::new(),
                idle_exit: IdleExit::After(DEFAULT_IDLE_EXIT),
            },
            http: HttpConfig {
                listen: None,
                allowed_hosts: vec![
                    "localhost".into(),
                    "127.0.0.1".into(),
                    "[::1]".into(),
                    "::1".into(),
                ],
                allowed_origins: Vec::new(),
                public_url: None,
                check_host: true,
                check_origin: true,
                limits: HttpLimits::default(),
            },
            audit: AuditConfig {
                durability: Durability::Fsync,
                redact: crate::audit::DEFAULT_REDACT.iter().map(|p| (*p).to_owned()).collect(),
                key_path: None,
                witness: None,
                sink: None,
            },
            identity: IdentityConfig {
                stdio_principal: StdioPrincipal::Env(EnvVarName("USER".to_string())),
                stdio_person: None,
                tokens: Vec::new(),
                oidc: Vec::new(),
                failed_auth_limit: std::num::NonZeroU32::new(20).unwrap_or(std::num::NonZeroU32::MIN),
            },
            approvals: ApprovalsConfig {
                timeout: Duration::from_secs(15 * 60),
                progress_every: Duration::from_secs(10),
                default_approvers: Vec::new(),
                slack: None,
                teams: None,
                web: WebConfig {
                    oidc: None,
                    session_lifetime: Duration::from_secs(8 * 3600),
                    idle_timeout: Duration::from_secs(30 * 60),
                    auditors: Vec::new(),
                },
            },
            telemetry: crate::telemetry::TelemetryConfig::default(),
            storage: crate::storage::StorageConfig::default(),
        }
    }

    /// Loads `path`, or `./airlock.toml` when `path` is `None` and that file exists, or
    /// the built-in defaults otherwise. A `path` that cannot be read is a problem.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let (config, errors) = Config::load_partial(path);
        errors.into_result(config)
    }

    /// Parses and validates the text of a config file named `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let (config, errors) = Config::parse_partial(text, path);
        errors.into_result(config)
    }

    /// Like `load`, but always returns a config: every valid key applied, defaults where
    /// a value was wrong. `airlock check` uses it to go on checking manifests and policies.
    pub fn load_partial(path: Option<&Path>) -> (Config, ConfigErrors) {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_FILE).is_file() => PathBuf::from(DEFAULT_FILE),
            None => return (Config::defaults_in(Path::new("")), ConfigErrors::new()),
        };
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse_partial(&text, &path),
            Err(e) => {
                let problem = Problem::file(&path, format!("cannot read the config file: {e}"));
                (Config::defaults_in(&base_dir), problem.into())
            }
        }
    }

    /// Parses what it can; see `load_partial`.
    pub fn parse_partial(text: &str, path: &Path) -> (Config, ConfigErrors) {
        let source = Source::new(path, text);
        let mut errors = ConfigErrors::new();
        let raw: Option<raw::RawConfig> = deserialize_all(&source, &mut errors);
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut config = Config::defaults_in(&base_dir);
        config.file = Some(path.to_path_buf());
        if let Some(raw) = raw {
            names::check(&source, &mut errors, &raw);
            let mut v = raw::Validator {
                source: &source,
                errors: &mut errors,
                base_dir: &base_dir,
            };
            v.gateway(raw.gateway.unwrap_or_default(), &mut config.gateway);
            v.http(raw.http.unwrap_or_default(), &mut config.http);
            v.audit(raw.audit.unwrap_or_default(), &mut config.audit);
            v.identity(raw.identity.unwrap_or_default(), &mut config.identity);
            let mut approvals = raw.approvals.unwrap_or_default();
            // [approvals.web] names an [[identity.oidc]] issuer, so it is checked after them.
            let web = approvals.web.take();
            v.approvals(approvals, &mut config.approvals);
            v.approvals_web(web, &config.identity, &mut config.approvals.web);
            v.telemetry(raw.telemetry.unwrap_or_default(), &mut config.telemetry);
            v.storage(raw.storage, &mut config.storage);
        }
        errors.sort_by_line();
        (config, errors)
    }

    /// The text shown for where this config came from.
    pub fn origin(&self) -> String {
        match &self.file {
            Some(f) => f.display().to_string(),
            None => "built-in defaults".to_string(),
        }
    }
}

/// Parses a positive byte size: `"256KiB"`, `"4 MiB"`, `"1GiB"`, or plain bytes `"65536"`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => 0,
    };
    match digits.parse::<usize>().ok().and_then(|n| n.checked_mul(factor)) {
        Some(0) | None => Err(format!("\"{text}\" is not a size like \"256KiB\", \"4MiB\" or \"65536\" (bytes, more than zero)")),
        Some(bytes) => Ok(bytes),
    }
}

/// Parses a positive human duration such as `"30m"` or `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => Err("a duration must be longer than zero".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "\"{text}\" is not a duration like \"30s\", \"15m\" or \"1h\" ({e})"
        )),
    }
}

/// Checks RFC 6901 syntax: empty (the whole document) or `/`-separated, with `~` only in
/// `~0` and `~1`.
pub fn check_json_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "\"{pointer}\" is not a JSON pointer (it must start with \"/\", e.g. \"/password\")"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "\"{pointer}\" is not a JSON pointer (\"~\" must be written \"~0\")"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(text, Path::new("conf/airlock.toml"))
            .map_err(|e| e.problems().iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn an_empty_file_gives_the_defaults_with_paths_under_its_directory() {
        let config = parse("").unwrap();
        assert_eq!(config.gateway.data_dir, Path::new("conf/airlock-data"));
        assert_eq!(config.gateway.policies, Path::new("conf/policies"));
        assert_eq!(config.gateway.separator, "__");
        assert!(config.gateway.prefix_tools);
        assert_eq!(config.gateway.new_tools, NewTools::Trust);
        assert_eq!(config.audit.durability, Durability::Fsync);
        assert_eq!(config.approvals.timeout, Duration::from_secs(900));
        assert_eq!(
            config.identity.stdio_principal,
            StdioPrincipal::Env(EnvVarName("USER".into()))
        );
    }

    #[test]
    fn every_documented_key_is_accepted_and_typed() {
        let text = r#"
[gateway]
data_dir = "/var/lib/airlock"
separator = "."
prefix_tools = false
new_tools = "hold"
[http]
listen = "127.0.0.1:8787"
allowed_hosts = ["localhost"]
allowed_origins = ["https://app.example.com/"]
public_url = "https://airlock.example.com"
check_host = false
check_origin = false
[audit]
durability = "none"
redact = ["/password", "/a~1b"]
[identity]
stdio_principal = "ops-bot"
[[identity.tokens]]
name = "alice"
sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
groups = ["sre"]
[[identity.oidc]]
issuer = "https://login.example.com/tid/v2.0"
audience = "api://airlock"
[approvals]
timeout = "30m"
progress_every = "5s"
[approvals.slack]
bot_token_env = "SLACK_BOT_TOKEN"
signing_secret_env = "SLACK_SIGNING_SECRET"
channel = "C0123"
api_base = "http://127.0.0.1:9999/api"
users = { U0123 = "alice" }
[approvals.teams]
workflow_url_env = "TEAMS_WORKFLOW_URL"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.gateway.data_dir, Path::new("/var/lib/airlock"));
        assert!(!c.gateway.prefix_tools);
        assert_eq!(c.gateway.new_tools, NewTools::Hold);
        assert_eq!(c.http.listen, Some("127.0.0.1:8787".parse().unwrap()));
        assert_eq!(c.http.allowed_origins, vec!["https://app.example.com"]);
        assert!(!c.http.check_host && !c.http.check_origin);
        assert_eq!(c.audit.durability, Durability::None);
        assert_eq!(
            c.identity.stdio_principal,
            StdioPrincipal::Fixed("ops-bot".into())
        );
        assert_eq!(c.identity.tokens[0].groups, vec!["sre"]);
        assert_eq!(c.identity.tokens[0].sha256[0], 0x2c);
        assert_eq!(c.identity.oidc[0].groups_claim, "groups");
        assert_eq!(c.approvals.progress_every, Duration::from_secs(5));
        let slack = c.approvals.slack.unwrap();
        assert_eq!(slack.users.get("U0123").map(String::as_str), Some("alice"));
        assert_eq!(
            c.approvals.teams.unwrap().workflow_url_env.as_str(),
            "TEAMS_WORKFLOW_URL"
        );
    }

    #[test]
    fn http_limits_parse_and_bad_ones_name_their_line() {
        let good = "[http]\nheader_read_timeout = \"3s\"\nmax_connections = 9\nmax_body = \"2KiB\"\n\
                    max_body_mcp = \"1 MiB\"\nmax_sessions_per_principal = 3\nallowed_hosts = [\"gw.example.com:8443\", \"::1\"]\n";
        let c = parse(good).unwrap();
        assert_eq!(c.http.limits.header_read_timeout, Duration::from_secs(3));
        assert_eq!((c.http.limits.max_connections, c.http.limits.max_body, c.http.limits.max_body_mcp), (9, 2048, 1 << 20));
        assert_eq!(c.http.limits.max_sessions_per_principal, 3);
        assert_eq!(c.http.limits.idle_timeout, HttpLimits::default().idle_timeout);
        let bad = "[http]\nmax_connections = 0\nmax_body = \"lots\"\nidle_timeout = \"never\"\n\
                   max_sessions = -1\nallowed_hosts = [\"localhost\", \"[::1]evil.com\"]\n";
        let got = parse(bad).unwrap_err();
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[0].starts_with("conf/airlock.toml:2: key \"http.max_connections\""), "{}", got[0]);
        assert!(got[1].starts_with("conf/airlock.toml:3: key \"http.max_body\""), "{}", got[1]);
        assert!(got[2].starts_with("conf/airlock.toml:4: key \"http.idle_timeout\""), "{}", got[2]);
        assert!(got[3].starts_with("conf/airlock.toml:5: key \"http.max_sessions\""), "{}", got[3]);
        assert!(got[4].starts_with("conf/airlock.toml:6: key \"http.allowed_hosts\": \"[::1]evil.com\""), "{}", got[4]);
        assert_eq!(parse_size("64"), Ok(64));
        assert!(parse_size("0").is_err() && parse_size("4MB").is_err() && parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn one_load_reports_every_problem_with_line_and_key() {
        let text = "[audit]\ndurabilty = \"fsync\"\n[http]\nlisten = \"localhost\"\n\
                    [approvals]\ntimeout = \"soon\"\n[approvals.slack]\nchannel = \"C1\"\n";
        let got = parse(text).unwrap_err();
        assert_eq!(got.len(), 5, "{got:#?}");
        assert_eq!(
            got[0],
            "conf/airlock.toml:2: key \"durabilty\" is not known (did you mean \"durability\"?)"
        );
        assert!(
            got[1].starts_with("conf/airlock.toml:4: key \"http.listen\""),
            "{}",
            got[1]
        );
        assert!(
            got[2].starts_with("conf/airlock.toml:6: key \"approvals.timeout\""),
            "{}",
            got[2]
        );
        assert!(
            got[3].contains("needs the key \"bot_token_env\""),
            "{}",
            got[3]
        );
        assert!(
            got[4].contains("needs the key \"signing_secret_env\""),
            "{}",
            got[4]
        );
    }

    #[test]
    fn audit_sink_keys_are_checked_with_their_lines() {
        let ok = parse("[audit.sink]\nurl = \"https://siem.example/ingest\"\nformat = \"ocsf\"\ntoken_env = \"SIEM_TOKEN\"\nbatch = 100\n").unwrap();
        let sink = ok.audit.sink.unwrap();
        assert_eq!((sink.url.as_str(), sink.format, sink.batch), ("https://siem.example/ingest", crate::feed::Format::Ocsf, 100));
        assert_eq!(sink.token_env.map(|v| v.as_str().to_owned()), Some("SIEM_TOKEN".to_owned()));
        let defaults = parse("[audit.sink]\nurl = \"http://127.0.0.1:9/x\"\n").unwrap().audit.sink.unwrap();
        assert_eq!((defaults.format, defaults.batch, defaults.token_env), (crate::feed::Format::Jsonl, 500, None));
        let got = parse("[audit.sink]\nurl = \"ftp://x\"\nformat = \"cef\"\ntoken_env = \"1BAD\"\nbatch = 0\n").unwrap_err();
        assert!(got[0].starts_with("conf/airlock.toml:2: key \"audit.sink.url\""), "{got:?}");
        assert!(got[1].starts_with("conf/airlock.toml:3: key \"audit.sink.format\""), "{got:?}");
        assert!(got[2].starts_with("conf/airlock.toml:4: key \"audit.sink.token_env\""), "{got:?}");
        assert!(got[3].starts_with("conf/airlock.toml:5: key \"audit.sink.batch\""), "{got:?}");
        let got = parse("[audit.sink]\nformat = \"ocsf\"\n").unwrap_err();
        assert!(got[0].contains("[audit.sink] needs the key \"url\""), "{got:?}");
    }

    #[test]
    fn witness_keys_and_urls_are_checked_with_their_lines() {
        let key = crate::audit::SigningKey::generate().unwrap().public_key();
        let vkey = crate::audit::VerifierKey::cosigner(crate::audit::KeyName::new("w.example/1").unwrap(), key);
        let ok = parse(&format!(
            "[audit.witness]\ninterval = \"10s\"\ndir = \"w\"\n[[audit.witness.http]]\nurl = \"http://127.0.0.1:1\"\nkey = \"{vkey}\"\n"
        ))
        .unwrap();
        let w = ok.audit.witness.unwrap();
        assert_eq!((w.interval, w.http.len(), w.http[0].key.clone()), (Duration::from_secs(10), 1, vkey.to_string()));
        assert_eq!(w.dir, Some(PathBuf::from("conf/w")));
        let got = parse("[audit.witness]\ninterval = \"soon\"\n[[audit.witness.http]]\nurl = \"ftp://x\"\nkey = \"w+00000000+AAAA\"\n").unwrap_err();
        assert!(got[0].starts_with("conf/airlock.toml:2: key \"audit.witness.interval\""), "{got:?}");
        assert!(got[1].starts_with("conf/airlock.toml:4: key \"audit.witness.http.url\""), "{got:?}");
        assert!(got[2].starts_with("conf/airlock.toml:5: key \"audit.witness.http.key\""), "{got:?}");
    }

    #[test]
    fn auditors_are_groups_or_users_and_default_to_nobody() {
        assert!(parse("").unwrap().approvals.web.auditors.is_empty());
        let ok = parse("[approvals.web]\nauditors = [\"group:auditors\", \"user:erin\"]\n").unwrap();
        assert_eq!(ok.approvals.web.auditors, vec!["group:auditors", "user:erin"]);
        let got = parse("[approvals.web]\nauditors = [\"erin\", \"group:\"]\n").unwrap_err();
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got[0].starts_with("conf/airlock.toml:2: approvals.web.auditors:") && got[0].contains("group:NAME"), "{}", got[0]);
        assert!(got[1].contains("names nobody"), "{}", got[1]);
    }

    #[test]
    fn default_approvers_are_groups_or_users() {
        let ok = parse("[approvals]\ndefault_approvers = [\"group:approvers\", \"user:zoe\"]\n").unwrap();
        assert_eq!(ok.approvals.default_approvers, vec!["group:approvers", "user:zoe"]);
        let got = parse("[approvals]\ndefault_approvers = [\"sre\"]\n").unwrap_err();
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].starts_with("conf/airlock.toml:2:") && got[0].contains("group:NAME"), "{}", got[0]);
    }

    #[test]
    fn an_unknown_value_suggests_the_near_one() {
        let got = parse("[gateway]\nnew_tools = \"hld\"\n").unwrap_err();
        assert_eq!(
            got,
            vec!["conf/airlock.toml:2: key \"gateway.new_tools\": \"hld\" is not a known value (did you mean \"hold\"?)"]
        );
        let got = parse("[audit]\ndurability = \"fsnyc\"\n").unwrap_err();
        assert_eq!(
            got,
            vec![
                "conf/airlock.toml:2: key \"audit.durability\": \"fsnyc\" is not a known value (did you mean \"fsync\"?)"
            ]
        );
    }

    #[test]
    fn approvals_web_needs_a_configured_issuer_and_a_client_id() {
        let good = "[[identity.oidc]]\nissuer = \"https://idp.example.com\"\naudience = \"api\"\n\
                    [approvals.web]\noidc_issuer = \"https://idp.example.com\"\nclient_id = \"airlock\"\n\
                    client_secret_env = \"WEB_SECRET\"\nsession_lifetime = \"1h\"\n";
        let web = parse(good).unwrap().approvals.web;
        let oidc = web.oidc.unwrap();
        assert_eq!((oidc.client_id.as_str(), oidc.client_secret_env.unwrap().as_str()), ("airlock", "WEB_SECRET"));
        assert_eq!(web.session_lifetime, Duration::from_secs(3600));
        let got = parse("[approvals.web]\noidc_issuer = \"https://other.example.com\"\n").unwrap_err();
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("conf/airlock.toml:2: key \"approvals.web.oidc_issuer\"")
            && p.contains("not an [[identity.oidc]] issuer")), "{got:#?}");
        assert!(got.iter().any(|p| p.contains("needs the key \"client_id\"")), "{got:#?}");
        assert!(parse("[approvals.web]\nsession_lifetime = \"8h\"\n").unwrap().approvals.web.oidc.is_none());
    }

    #[test]
    fn json_pointers_are_checked() {
        assert!(check_json_pointer("").is_ok());
        assert!(check_json_pointer("/a/~0b/~1c").is_ok());
        assert!(check_json_pointer("password").is_err());
        assert!(check_json_pointer("/a~b").is_err());
        assert!(check_json_pointer("/a~").is_err());
    }
}
