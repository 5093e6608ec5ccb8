//! `airlock approvals …`: list, show and decide approvals on a running gateway: over the
//! control socket of the config's data dir (`approvals_*` requests), or with `--url` or
//! no gateway on the socket, over its HTTP API (`/api/v1/approvals`). Both run the API's
//! functions as the identity of the token presented (`--token-env`), never as the local
//! user.
//!
//! Owns: the `approvals` subcommands, where they find the gateway and the token, and how
//! approvals read in a terminal.
//! Uses: `approval` (the JSON form, `Approval`), `config` (`[http]` for the default URL),
//! `cli::live` (the socket).
//! Must not: open the state database (held calls live in the running gateway); every
//! decision goes through the gateway, which logs it.

#![allow(clippy::print_stdout)] // printing approvals is the point of these commands

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::approval::{Approval, ApprovalId, Verdict};
use crate::cli::{ConfigArg, EXIT_FOUND_PROBLEM};

/// Where the gateway is and who we are.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    #[command(flatten)]
    config: ConfigArg,
    /// The gateway's base URL (default: `[http] public_url`, else `http://` + `[http] listen`).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Environment variable holding your API token (a `[[identity.tokens]]` token or an OIDC JWT).
    #[arg(long, value_name = "VAR", default_value = "AIRLOCK_TOKEN")]
    token_env: String,
}

/// Subcommands of `airlock approvals`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List approvals, oldest first.
    List {
        #[command(flatten)]
        target: Target,
        /// Only approvals in this state (pending, approved, denied, expired, cancelled).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one approval: arguments, digest, votes, expiry.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held call (exit 1 if refused: your own call, not an approver, settled).
    Approve {
        id: String,
        #[command(flatten)]
        target: Target,
        /// Why, for the log.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Deny a held call; the caller sees your name and comment.
    Deny {
        id: String,
        #[command(flatten)]
        target: Target,
        /// Why, for the caller and the log (required).
        #[arg(long, value_name = "TEXT")]
        comment: String,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match cmd {
            Command::List { target, state, json } => {
                let body = match Gateway::find(&target).await? {
                    Gateway::Socket(mut connection, token) => {
                        connection.call(&crate::control::Request::ApprovalsList { token, state }).await?
                    }
                    Gateway::Http(client) => {
                        let path = match &state {
                            Some(state) => format!("/api/v1/approvals?state={}", url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()),
                            None => "/api/v1/approvals".to_owned(),
                        };
                        client.expect_ok(client.get(&path).await?)?
                    }
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&body)?);
                } else {
                    let approvals: Vec<Approval> = serde_json::from_value(body["approvals"].clone())
                        .context("the gateway answered with approvals this airlock cannot read")?;
                    print_table(&approvals);
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Show { id, target, json } => {
                let id = checked_id(&id)?;
                let body = match Gateway::find(&target).await? {
                    Gateway::Socket(mut connection, token) => {
                        connection.call(&crate::control::Request::ApprovalsShow { token, id: id.to_string() }).await?
                    }
                    Gateway::Http(client) => client.expect_ok(client.get(&format!("/api/v1/approvals/{id}")).await?)?,
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&body)?);
                } else {
                    let approval: Approval =
                        serde_json::from_value(body).context("the gateway answered with an approval this airlock cannot read")?;
                    print_details(&approval);
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Approve { id, target, comment } => decide(&target, &id, Verdict::Approve, comment).await,
            Command::Deny { id, target, comment } => decide(&target, &id, Verdict::Deny, Some(comment)).await,
        }
    })
}

/// Where the approvals are: the data dir's gateway on its socket (with the token it will
/// check), or an HTTP API.
enum Gateway {
    Socket(crate::control::Connection, crate::control::Token),
    Http(Client),
}

impl Gateway {
    /// `--url` is HTTP; else the socket of the config's data dir; else, with no gateway
    /// there, the configured HTTP address; else nothing is possible and this says why.
    async fn find(target: &Target) -> anyhow::Result<Gateway> {
        if target.url.is_some() {
            return Ok(Gateway::Http(Client::new(target)?));
        }
        let config = super::gateway::load_config(&target.config)?;
        let data_dir = &config.gateway.data_dir;
        if let Some(connection) = super::live::connect(data_dir, super::serve::canonical_config(&config)).await? {
            return Ok(Gateway::Socket(connection, crate::control::Token::new(token(target)?)));
        }
        match default_url(target.config.config.as_deref()) {
            Ok(_) => Ok(Gateway::Http(Client::new(target)?)),
            Err(_) => bail!(
                "no gateway is running for {} and airlock.toml names no HTTP address ([http] listen or public_url; or pass --url): \
                 held calls exist only while their gateway runs (stopping it cancels them), so there is nothing to list or decide; \
                 `airlock log` shows past decisions, and `airlock gateway start` starts the gateway",
                data_dir.display()
            ),
        }
    }
}

/// The token in `--token-env`.
fn token(target: &Target) -> anyhow::Result<String> {
    let token = std::env::var(&target.token_env).map_err(|_| {
        anyhow::anyhow!(
            "no API token: set {} to your token (a [[identity.tokens]] token or an OIDC JWT), or name another variable with --token-env",
            target.token_env
        )
    })?;
    Ok(token.trim().to_owned())
}

async fn decide(target: &Target, id: &str, verdict: Verdict, comment: Option<String>) -> anyhow::Result<ExitCode> {
    let id = checked_id(id)?;
    let client = match Gateway::find(target).await? {
        Gateway::Http(client) => client,
        Gateway::Socket(mut connection, token) => {
            let request = crate::control::Request::ApprovalsDecide { token, id: id.to_string(), decision: verdict, comment };
            return match connection.call(&request).await {
                Ok(body) => decided(&body, verdict),
                Err(crate::control::ControlError::Refused(refusal)) if refusal.code == crate::control::RefusalCode::DecisionRefused => {
                    eprintln!("airlock: refused: {}", refusal.message);
                    Ok(ExitCode::from(EXIT_FOUND_PROBLEM))
                }
                Err(error) => Err(error.into()),
            };
        }
    };
    let path = format!("/api/v1/approvals/{id}/decision");
    let answer = client.post(&path, &json!({"decision": verdict.as_str(), "comment": comment})).await?;
    match answer.status {
        200 => decided(&answer.body, verdict),
        403 | 409 => {
            eprintln!("airlock: refused: {}", answer.error());
            if let Some(state) = answer.body["approval"]["state"].as_str() {
                eprintln!("airlock: approval {id} is {state}");
            }
            Ok(ExitCode::from(EXIT_FOUND_PROBLEM))
        }
        _ => bail!(client.failure(&answer)),
    }
}

/// Prints a counted (or repeated) decision's answer, `{"approval":…,"counted":…}`.
fn decided(body: &Value, verdict: Verdict) -> anyhow::Result<ExitCode> {
    let approval: Approval = serde_json::from_value(body["approval"].clone())
        .context("the gateway answered with an approval this airlock cannot read")?;
    let counted = body["counted"].as_bool().unwrap_or(false);
    println!("{}", outcome(&approval, verdict, counted));
    Ok(ExitCode::SUCCESS)
}

/// One line saying what the decision did.
fn outcome(a: &Approval, verdict: Verdict, counted: bool) -> String {
    let state = a.state.as_str();
    if !counted {
        return format!("you had already decided {}; it is {state} ({} of {} approvals)", a.id, a.approvals(), a.quorum);
    }
    match (verdict, a.is_pending()) {
        (Verdict::Approve, true) => {
            format!("approved {}: {} of {} approvals, still pending", a.id, a.approvals(), a.quorum)
        }
        (Verdict::Approve, false) => format!("approved {}: it is {state} ({} of {} approvals)", a.id, a.approvals(), a.quorum),
        (Verdict::Deny, _) => format!("denied {}: it is {state}", a.id),
    }
}

/// `ID  STATE  TOOL  CALLER  VOTES  EXPIRES`.
fn print_table(approvals: &[Approval]) {
    if approvals.is_empty() {
        println!("no approvals");
        return;
    }
    let rows: Vec<[String; 6]> = approvals
        .iter()
        .map(|a| {
            [
                a.id.to_string(),
                a.state.as_str().to_owned(),
                a.tool.clone(),
                a.caller.clone(),
                format!("{}/{}", a.approvals(), a.quorum),
                a.expires_at(),
            ]
        })
        .collect();
    let header = ["ID", "STATE", "TOOL", "CALLER", "VOTES", "EXPIRES"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn print_details(a: &Approval) {
    println!("approval     {} ({})", a.id, a.kind.as_str());
    println!("state        {}", a.state.as_str());
    println!("tool         {} (server {}, risk {})", a.tool, a.server, a.risk);
    println!("caller       {} (call {}, session {})", a.caller, a.call_id, a.session);
    match &a.rule {
        Some(rule) => println!("rule         {rule}: {}", a.reason),
        None => println!("reason       {}", a.reason),
    }
    let approvers = if a.approvers.is_empty() { "anyone authenticated but the caller".to_owned() } else { a.approvers.join(", ") };
    println!("quorum       {} of {} approvals; approvers: {approvers}", a.approvals(), a.quorum);
    let channels = if a.channels.is_empty() { "all configured".to_owned() } else { a.channels.join(", ") };
    println!("channels     {channels}");
    println!("created      {}", crate::approval::rfc3339(a.created_ms));
    println!("expires      {}", a.expires_at());
    if let Some(settled) = a.settled_ms {
        let reason = a.settled_reason.as_deref().unwrap_or("");
        println!("settled      {} ({reason})", crate::approval::rfc3339(settled));
    }
    if let Some(call) = &a.executed_by {
        println!("executed by  {call}");
    }
    println!("args hmac    {}", a.args_hmac);
    println!("tool sha256  {}", a.tool_fingerprint);
    let args = serde_json::to_string_pretty(&a.args).unwrap_or_default();
    let args = crate::text::for_people(&args);
    println!("arguments (redacted as configured):");
    for line in args.lines() {
        println!("  {line}");
    }
    if a.votes.is_empty() {
        println!("votes        none yet");
    } else {
        println!("votes:");
        for v in &a.votes {
            let comment = v.comment.as_deref().map(|c| format!(": {c:?}")).unwrap_or_default();
            println!("  {} by {} via {} at {}{comment}", v.verdict.as_str(), v.approver, v.channel, crate::approval::rfc3339(v.at_ms));
        }
    }
}

/// An id typed by a person goes into a URL path: only the shape the gateway makes passes
/// (a `..` would otherwise be resolved away and reach another route).
fn checked_id(id: &str) -> anyhow::Result<ApprovalId> {
    ApprovalId::parse(id.trim())
        .with_context(|| format!("{id:?} is not an approval id (ap- and 24 lowercase hex digits, as `airlock approvals list` shows)"))
}

/// An answer from the API.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn error(&self) -> String {
        self.body["error"].as_str().map_or_else(|| format!("HTTP {}", self.status), str::to_owned)
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(target: &Target) -> anyhow::Result<Client> {
        let base = match &target.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => default_url(target.config.config.as_deref())?,
        };
        let token = token(target)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .context("could not build the HTTP client")?;
        Ok(Client { http, base, token })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("could not reach the gateway at {} (is it running with HTTP on?)", self.base))?;
        let status = response.status().as_u16();
        let text = response.text().await.with_context(|| format!("reading the answer from {}", self.base))?;
        // Non-JSON (a proxy's error page, a guard's plain text) is kept as the error text.
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": text.trim()}));
        Ok(Answer { status, body })
    }

    /// The body of a 200; anything else is an error (refusals only count for decisions).
    fn expect_ok(&self, answer: Answer) -> anyhow::Result<Value> {
        if answer.status == 200 { Ok(answer.body) } else { bail!(self.failure(&answer)) }
    }

    fn failure(&self, answer: &Answer) -> String {
        format!("{} answered {}: {}", self.base, answer.status, answer.error())
    }
}

/// `[http] public_url`, else `http://` + `[http] listen` (an unspecified address means this host).
fn default_url(explicit: Option<&Path>) -> anyhow::Result<String> {
    let config = if explicit.is_some() || Path::new(crate::config::DEFAULT_FILE).exists() {
        Some(crate::config::Config::load(explicit).map_err(|problems| anyhow::anyhow!("{problems}"))?)
    } else {
        None
    };
    let http = config.map(|c| c.http);
    if let Some(url) = http.as_ref().and_then(|h| h.public_url.as_ref()) {
        return Ok(url.as_str().trim_end_matches('/').to_owned());
    }
    if let Some(mut addr) = http.as_ref().and_then(|h| h.listen) {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        return Ok(format!("http://{addr}"));
    }
    bail!("no gateway URL: pass --url, or set [http] public_url or [http] listen in airlock.toml")
}

