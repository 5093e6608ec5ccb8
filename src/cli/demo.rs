//! `airlock demo`: the quickstart, scripted.
//!
//! Starts the gateway in this process with the shipped `airlock.toml`, `tool-manifests/`
//! and `policies/`, over HTTP on a free loopback port, and plays an agent making four
//! calls: one allowed, one held and approved through the HTTP API by a second identity,
//! one denied by policy, and one whose approval expires. Then it verifies the audit log
//! and prints what happened with the sequence numbers of the records.
//!
//! Three things differ from a plain `airlock serve`, and the output says so: two demo
//! identities with fresh random tokens (the agent, and an approver in group
//! `data-protection`), HTTP on 127.0.0.1, and a short default approval timeout so that
//! expiry shows within the demo.

#![allow(clippy::print_stdout)] // the narrative is the point of this command

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest, Implementation,
    ProgressNotificationParam, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::approval::SignedReceipt;
use crate::audit::{LogPaths, LogReader, Seq, SigningKey, Trust, verify_stopped};
use crate::config::TokenConfig;
use crate::manifest::Transport;

/// Arguments of `airlock demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    /// How long the demo's unanswered approval waits before it expires.
    #[arg(long, default_value = "5s", value_parser = crate::config::parse_duration)]
    expire_after: Duration,
}

const AGENT: &str = "agent";
const APPROVER: &str = "dana";
const APPROVER_GROUP: &str = "data-protection";

/// One scripted call.
struct Step {
    what: &'static str,
    tool: &'static str,
    args: Value,
}

fn script() -> Vec<Step> {
    vec![
        Step { what: "reads a customer record", tool: "demo__read_customer", args: json!({"id": "C-1001"}) },
        Step {
            what: "exports every customer to a partner",
            tool: "demo__export_customers",
            args: json!({"destination": "partner-analytics", "format": "csv"}),
        },
        Step { what: "deletes a production bucket", tool: "demo__delete_bucket", args: json!({"bucket": "prod-customers"}) },
        Step { what: "runs a 150-step database migration", tool: "demo__run_migration", args: json!({"steps": 150}) },
    ]
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut checked = super::check::load_everything(&args.config)?;
    if !checked.problems.is_empty() {
        bail!("the configuration has problems (run `airlock check`):\n{}", checked.problems);
    }
    let sandbox = demo_sandbox(&checked.manifests).context(
        "airlock demo needs the demo tool server (tool-manifests/demo.toml runs `airlock demo-tools --sandbox DIR`); \
         run it from the repository root, or pass --config",
    )?;
    let agent_token = random_token()?;
    let approver_token = random_token()?;
    let config = &mut checked.config;
    config.identity.tokens.retain(|t| t.name != AGENT && t.name != APPROVER);
    config.identity.tokens.push(token(AGENT, &agent_token, &[]));
    config.identity.tokens.push(token(APPROVER, &approver_token, &[APPROVER_GROUP]));
    config.approvals.timeout = args.expire_after;
    config.http.public_url = None;
    let data_dir = config.gateway.data_dir.clone();
    let key_path = config.audit.key_path.clone();
    let expire_after = args.expire_after;
    let config_file = config.file.clone();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (listening, address) = tokio::sync::oneshot::channel();
        let options = super::serve::Options {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            stdio: false,
            shutdown: shutdown.clone(),
            listening: Some(listening),
            control: false,
        };
        let gateway = tokio::spawn(super::serve::serve(checked, options));
        let address = address.await.context("the gateway stopped before it listened")?;
        let base = format!("http://{address}");
        println!("Airlock demo");
        println!("============");
        println!("Gateway  {base}  (config: {})", config_file.as_deref().map_or("built-in defaults".into(), |p| p.display().to_string()));
        println!("Data     {}  (audit log, key, state); sandbox {}", data_dir.display(), sandbox.display());
        println!("For this run: identities `{AGENT}` (the AI agent) and `{APPROVER}` (an approver in group");
        println!("`{APPROVER_GROUP}`) with fresh tokens, and approvals without a rule timeout expire after");
        println!("{} (the shipped default is 15m).", humantime::format_duration(expire_after));
        let outcome = play(&base, &agent_token, &approver_token).await;
        shutdown.cancel();
        gateway.await.context("the gateway task failed")??;
        let played = outcome?;
        report(&data_dir, key_path.as_deref(), &sandbox, &played)
    })
}

/// What one step showed the agent.
struct Played {
    tool: &'static str,
    is_error: bool,
}

async fn play(base: &str, agent_token: &str, approver_token: &str) -> anyhow::Result<Vec<Played>> {
    let agent = Agent::default();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(agent_token),
    );
    let client = agent.clone().serve(transport).await.context("the agent could not connect to the gateway")?;
    let http = reqwest::Client::new();
    let mut played = Vec::new();
    for (n, step) in script().into_iter().enumerate() {
        println!();
        println!("{}. The agent {}:", n + 1, step.what);
        println!("   {} {}", step.tool, step.args);
        let call = tokio::spawn(call(client.peer().clone(), step.tool, step.args.clone()));
        if step.tool == "demo__export_customers" {
            let id = approve_as_a_person(&http, base, approver_token, step.tool, &agent).await?;
            println!("   {APPROVER} approves {id} through the HTTP API (POST /api/v1/approvals/{id}/decision)");
        }
        let (text, is_error) = call.await.context("the agent's call failed")??;
        for line in agent.take_progress() {
            println!("   … {line}");
        }
        let verb = if is_error { "refused" } else { "ran" };
        println!("   → {verb}: {}", first_line(&text));
        played.push(Played { tool: step.tool, is_error });
    }
    client.cancel().await.ok();
    Ok(played)
}

/// Makes one call with a progress token, as an agent waiting on a hold would.
async fn call(peer: rmcp::Peer<RoleClient>, tool: &'static str, args: Value) -> anyhow::Result<(String, bool)> {
    let Value::Object(arguments) = args else { bail!("demo arguments are objects") };
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new(tool).with_arguments(arguments),
    ));
    let handle = peer.send_request_with_option(request, PeerRequestOptions::no_options()).await?;
    match handle.await_response().await? {
        ServerResult::CallToolResult(result) => {
            let text = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n");
            Ok((text, result.is_error == Some(true)))
        }
        other => bail!("unexpected answer to {tool}: {other:?}"),
    }
}

/// Waits for the held call to appear in the approver's list, then approves it.
async fn approve_as_a_person(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    tool: &str,
    agent: &Agent,
) -> anyhow::Result<String> {
    for _ in 0..300 {
        let listed: Value = http
            .get(format!("{base}/api/v1/approvals?state=pending"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let pending = listed["approvals"].as_array().into_iter().flatten().find(|a| a["tool"] == tool && a["caller"] == AGENT);
        if let Some(approval) = pending {
            let id = approval["id"].as_str().unwrap_or_default().to_owned();
            // What the agent sees while it waits.
            for _ in 0..100 {
                if agent.has_progress() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for line in agent.take_progress() {
                println!("   … {line}");
            }
            println!("   held: approval {id} needs {} approver(s) from {}", approval["quorum"], approval["approvers"]);
            let response = http
                .post(format!("{base}/api/v1/approvals/{id}/decision"))
                .bearer_auth(token)
                .json(&json!({"decision": "approve", "comment": "Q3 analytics export, ticket DP-1142"}))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("the approval API refused the decision: {} {}", response.status(), response.text().await.unwrap_or_default());
            }
            return Ok(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the held call never appeared in the approval API")
}

/// Verifies the log, then prints one row per call with its records' sequence numbers.
fn report(data_dir: &Path, key_path: Option<&Path>, sandbox: &Path, played: &[Played]) -> anyhow::Result<ExitCode> {
    let paths = LogPaths::new(data_dir, key_path);
    let anchor = SigningKey::load(&paths.key)?.public_key();
    println!();
    // One open for the verification and the records (see `audit::verify_stopped`).
    let reader = LogReader::open(&paths)?;
    let verified = verify_stopped(&reader, &paths, Trust { anchor })?;
    let intact = match &verified {
        Ok(report) => {
            println!(
                "airlock log verify: intact: records {}..{}, {} signed checkpoints, key {}",
                report.first, report.last, report.checkpoints, anchor.id()
            );
            true
        }
        Err(failure) => {
            println!("airlock log verify: FAILED at {failure}");
            false
        }
    };
    if let Some(line) = std::fs::read_to_string(sandbox.join("receipts.jsonl")).ok().and_then(|t| t.lines().last().map(str::to_owned)) {
        let receipt = serde_json::from_str::<Value>(&line).ok().and_then(|v| SignedReceipt::from_value(&v).ok());
        match receipt {
            Some(receipt) if receipt.verify(&anchor).is_ok() => println!(
                "receipt:           the export ran carrying approval {} signed by the log key (approvers: {})",
                receipt.receipt.approval_id,
                receipt.receipt.approvers.join(", ")
            ),
            _ => println!("receipt:           the last receipt in {} does NOT verify", sandbox.display()),
        }
    }

    let records = this_runs_calls(&reader)?;
    println!();
    println!("{:<2} {:<24} {:<36} {:<30} audit seq", "#", "tool", "decision", "outcome");
    for (n, (played, call)) in played.iter().zip(records.iter()).enumerate() {
        let decision = call.decision.clone().unwrap_or_default();
        let outcome = match (&call.settled, played.is_error) {
            (Some(settled), false) => format!("{settled}, ran"),
            (Some(settled), true) if settled.starts_with("approved") => format!("{settled}; the tool failed"),
            (Some(settled), true) => settled.clone(),
            (None, false) => "ran".to_owned(),
            (None, true) => "refused".to_owned(),
        };
        let seqs: Vec<String> = call.seqs.iter().map(ToString::to_string).collect();
        println!("{:<2} {:<24} {:<36} {:<30} {}", n + 1, played.tool, decision, outcome, seqs.join(" "));
    }
    println!();
    println!("See one record: airlock log show SEQ    Everything: airlock log export    Check: airlock log verify");
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_FOUND_PROBLEM) })
}

/// What the log holds about one call.
#[derive(Default)]
struct CallRecords {
    seqs: Vec<Seq>,
    decision: Option<String>,
    settled: Option<String>,
}

/// The calls of the last gateway start, in order, with their records (including their
/// approvals' records, which carry the call id).
fn this_runs_calls(reader: &LogReader) -> anyhow::Result<Vec<CallRecords>> {
    let mut records = Vec::new();
    for item in reader.records_from(Seq::new(1)) {
        let (seq, bytes) = item?;
        records.push((seq, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null)));
    }
    let start = records.iter().rposition(|(_, r)| r["kind"] == "gateway_started").unwrap_or(0);
    let mut calls: Vec<(String, CallRecords)> = Vec::new();
    for (seq, record) in &records[start..] {
        let Some(call_id) = record["call_id"].as_str() else { continue };
        let index = match calls.iter().position(|(id, _)| id == call_id) {
            Some(index) => index,
            None => {
                calls.push((call_id.to_owned(), CallRecords::default()));
                calls.len() - 1
            }
        };
        let entry = &mut calls[index].1;
        entry.seqs.push(*seq);
        match record["kind"].as_str() {
            Some("decision") => {
                let effect = record["decision"].as_str().unwrap_or("?");
                entry.decision = Some(match record["rule"].as_str() {
                    Some(rule) => format!("{effect} ({rule})"),
                    None => effect.to_owned(),
                });
            }
            Some("approval_settled") => {
                let state = record["decision"].as_str().unwrap_or("?");
                let approvers = record["detail"]["approvers"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
                entry.settled = Some(match approvers {
                    Some(names) if !names.is_empty() => format!("{state} by {names}"),
                    _ => state.to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(calls.into_iter().map(|(_, c)| c).collect())
}

/// The sandbox of the `airlock demo-tools` downstream, from its manifest.
fn demo_sandbox(manifests: &[crate::manifest::Manifest]) -> Option<PathBuf> {
    manifests.iter().find_map(|m| match &m.transport {
        Transport::Stdio(command) if command.args.iter().any(|a| a == "demo-tools") => {
            let at = command.args.iter().position(|a| a == "--sandbox")?;
            Some(command.cwd.join(command.args.get(at + 1)?))
        }
        _ => None,
    })
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(hex::encode(bytes))
}

fn token(name: &str, token: &str, groups: &[&str]) -> TokenConfig {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest.as_ref());
    TokenConfig {
        name: name.to_owned(),
        sha256,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        human: false,
        person: None,
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The scripted agent: an MCP client that keeps the hold's progress messages.
#[derive(Clone, Default)]
struct Agent {
    progress: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn has_progress(&self) -> bool {
        !self.progress.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    fn take_progress(&self) -> Vec<String> {
        let mut all = std::mem::take(&mut *self.progress.lock().unwrap_or_else(PoisonError::into_inner));
        all.dedup();
        all.truncate(1);
        all
    }
}

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("airlock-demo-agent", env!("CARGO_PKG_VERSION")))
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        if let Some(message) = params.message {
            self.progress.lock().unwrap_or_else(PoisonError::into_inner).push(message);
        }
    }
}
