//! The demo tools themselves: argument types (JSON schemas via schemars), annotations, and
//! what each call does to the sandbox.
//!
//! Owns: the static tool catalog (`DemoTools::static_router`) and each tool's behaviour.
//! Uses: `sandbox` for every effect, `gallery` for the content samples, rmcp's
//! `#[tool_router]`/`#[tool]` macros and the request context (progress, elicitation,
//! cancellation, peer notifications).
//! Must not: write outside the sandbox, print to stdout, or panic on caller input.

use std::time::{Duration, Instant};

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, ElicitRequest, ElicitRequestParams,
    ElicitResult, ElicitationAction, ElicitationSchema, InputRequest, InputRequests,
    InputRequiredResult, ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::DemoTools;
use super::gallery;
use super::sandbox::{ExportFormat, SandboxError};

/// Key of the elicitation in an `InputRequiredResult` (2026-07-28 clients).
const CONFIRM_KEY: &str = "confirm";
/// Upper bound for `run_migration` steps and `sleep` milliseconds, so a typo cannot hang a test.
const MAX_STEPS: u32 = 1000;
const MAX_SLEEP_MS: u64 = 600_000;

/// `read_customer` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ReadCustomerArgs {
    /// Customer id, e.g. "C-1001".
    pub(super) id: String,
}

/// `search_logs` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct SearchLogsArgs {
    /// Text to look for (case-insensitive substring).
    pub(super) query: String,
    /// Most lines to return (default 20).
    #[serde(default)]
    pub(super) limit: Option<u32>,
}

/// `export_customers` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ExportCustomersArgs {
    /// File name to create under the sandbox's exports/ folder, e.g. "customers.csv".
    pub(super) destination: String,
    /// "json" (default) or "csv".
    #[serde(default)]
    pub(super) format: Option<ExportFormat>,
}

/// `grant_role` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct GrantRoleArgs {
    /// User who receives the role.
    pub(super) user: String,
    /// Role to grant, e.g. "admin".
    pub(super) role: String,
}

/// `delete_bucket` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct DeleteBucketArgs {
    /// Bucket name, e.g. "tmp-scratch".
    pub(super) bucket: String,
}

/// Arguments naming a service (`restart_service`, `rotate_credentials`).
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ServiceArgs {
    /// Service name, e.g. "billing-api".
    pub(super) service: String,
}

/// `run_migration` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct RunMigrationArgs {
    /// Number of migration steps; one progress notification is sent per step.
    pub(super) steps: u32,
}

/// `echo` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct EchoArgs {
    /// Text to return unchanged.
    pub(super) text: String,
}

/// `fail` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct FailArgs {
    /// Message of the error result.
    pub(super) message: String,
}

/// `sleep` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct SleepArgs {
    /// How long to wait, in milliseconds.
    pub(super) ms: u64,
}

/// `add_tool` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct AddToolArgs {
    /// Name of the new tool.
    pub(super) name: String,
    /// Its description (default: a generic one).
    #[serde(default)]
    pub(super) description: Option<String>,
}

/// `change_tools` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ChangeToolsArgs {
    /// Tools to redefine (or add): name → the fields `tools/list` serves from now on
    /// (`title`, `description`, `inputSchema`, `outputSchema`, `annotations`, `icons`,
    /// `_meta`), replacing those fields only.
    #[serde(default)]
    pub(super) set: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// Tools `tools/list` stops serving (their calls still run, like a dishonest server's).
    #[serde(default)]
    pub(super) remove: Vec<String>,
    /// How many `notifications/tools/list_changed` to send afterwards (default 1, at most 10000).
    #[serde(default)]
    pub(super) notifications: Option<u32>,
}

/// `set_description` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct SetDescriptionArgs {
    /// Name of an existing tool.
    pub(super) tool: String,
    /// The description `tools/list` serves from now on.
    pub(super) description: String,
}

fn text_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn error_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn sandbox_error(err: SandboxError) -> CallToolResult {
    error_result(err.to_string())
}

#[tool_router(router = static_router, vis = "pub(super)")]
impl DemoTools {
    #[tool(
        description = "Read one customer record (name, email, plan, country, monthly revenue) by id.",
        annotations(
            title = "Read customer",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn read_customer(
        &self,
        Parameters(args): Parameters<ReadCustomerArgs>,
    ) -> CallToolResult {
        match self.sandbox().read_customer(&args.id) {
            Ok(customer) => {
                let mut result = text_result(customer.to_string());
                result.structured_content = Some(customer);
                result
            }
            Err(err) => sandbox_error(err),
        }
    }

    #[tool(
        description = "Search the service logs (api, auth, billing) for lines containing a text.",
        annotations(
            title = "Search logs",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn search_logs(&self, Parameters(args): Parameters<SearchLogsArgs>) -> CallToolResult {
        let limit = args.limit.unwrap_or(20) as usize;
        match self.sandbox().search_logs(&args.query, limit) {
            Ok(hits) if hits.is_empty() => {
                text_result(format!("no log lines match {:?}", args.query))
            }
            Ok(hits) => text_result(hits.join("\n")),
            Err(err) => sandbox_error(err),
        }
    }

    #[tool(
        description = "Export every customer record to a file (JSON or CSV) for use outside the system.",
        annotations(
            title = "Export customers",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn export_customers(
        &self,
        Parameters(args): Parameters<ExportCustomersArgs>,
    ) -> CallToolResult {
        let format = args.format.unwrap_or(ExportFormat::Json);
        match self.sandbox().export_customers(&args.destination, format) {
            Ok((path, count)) => {
                text_result(format!("exported {count} customers to {}", path.display()))
            }
            Err(err) => sandbox_error(err),
        }
    }

    #[tool(
        description = "Grant a role (e.g. admin) to a user. Elevates that user's permissions.",
        annotations(
            title = "Grant role",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn grant_role(&self, Parameters(args): Parameters<GrantRoleArgs>) -> CallToolResult {
        match self.sandbox().grant_role(&args.user, &args.role) {
            Ok(total) => text_result(format!(
                "granted role {:?} to {:?} ({total} grants in total)",
                args.role, args.user
            )),
            Err(err) => sandbox_error(err),
        }
    }

    #[tool(
        description = "Delete a storage bucket and every object in it. Cannot be undone.",
        annotations(
            title = "Delete bucket",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn delete_bucket(
        &self,
        Parameters(args): Parameters<DeleteBucketArgs>,
    ) -> CallToolResult {
        match self.sandbox().delete_bucket(&args.bucket) {
            Ok(files) => text_result(format!(
                "deleted bucket {:?} ({files} objects)",
                args.bucket
            )),
            Err(err) => sandbox_error(err),
        }
    }

    #[tool(
        description = "Restart a running service. Its in-flight requests are dropped.",
        annotations(
            title = "Restart service",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn restart_service(&self, Parameters(args): Parameters<ServiceArgs>) -> CallToolResult {
        match self.sandbox().record_restart(&args.service) {
            Ok(()) => {
                // A restart is news for whoever watches the service's log.
                self.resource_changed(&format!("demo://logs/{}.log", args.service)).await;
                text_result(format!("restarted service {:?}", args.service))
            }
            Err(err) => sandbox_error(err),
        }
    }

    #[tool(
        description = "Run a database migration of N steps, reporting progress after each step.",
        annotations(
            title = "Run migration",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn run_migration(
        &self,
        Parameters(args): Parameters<RunMigrationArgs>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        if args.steps == 0 || args.steps > MAX_STEPS {
            return error_result(format!("steps must be between 1 and {MAX_STEPS}"));
        }
        let token = context.meta.get_progress_token();
        for step in 1..=args.steps {
            // A real migration step; short, so tests stay fast.
            tokio::time::sleep(Duration::from_millis(2)).await;
            if let Some(token) = &token {
                let param = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(args.steps))
                    .with_message(format!("step {step} of {}", args.steps));
                // Awaited, so every notification is handed to the transport before the result.
                if let Err(err) = context.peer.notify_progress(param).await {
                    tracing::warn!(%err, "could not send progress");
                }
            }
        }
        match self.sandbox().record_migration(args.steps) {
            Ok(()) => text_result(format!("migration finished: {} steps applied", args.steps)),
            Err(err) => sandbox_error(err),
        }
    }

    #[tool(
        description = "Rotate a service's credentials. Asks the user to confirm first.",
        annotations(
            title = "Rotate credentials",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn rotate_credentials(
        &self,
        Parameters(args): Parameters<ServiceArgs>,
        context: RequestContext<RoleServer>,
        rmcp::handler::server::tool::InputResponses(responses): rmcp::handler::server::tool::InputResponses,
    ) -> CallToolResponse {
        let message = format!(
            "Rotate the credentials of {:?}? Clients using the old ones will be locked out.",
            args.service
        );
        let modern = context
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
        let answer = if modern {
            // 2026-07-28 forbids server-to-client requests: ask through an InputRequiredResult
            // and read the answer from the retried call's inputResponses.
            match responses.as_ref().and_then(|r| r.get(CONFIRM_KEY)) {
                Some(value) => match serde_json::from_value::<ElicitResult>(value.clone()) {
                    Ok(answer) => answer,
                    Err(err) => {
                        return error_result(format!("unreadable confirmation: {err}")).into();
                    }
                },
                None => {
                    return match confirm_input_required(message) {
                        Ok(required) => required.into(),
                        Err(failed) => failed.into(),
                    };
                }
            }
        } else {
            if context.peer.supported_elicitation_modes().is_empty() {
                return error_result(
                    "rotate_credentials needs a confirmation, but this client does not support elicitation",
                )
                .into();
            }
            let params = match confirm_params(message) {
                Ok(params) => params,
                Err(failed) => return failed.into(),
            };
            match context.peer.create_elicitation(params).await {
                Ok(answer) => answer,
                Err(err) => return error_result(format!("confirmation failed: {err}")).into(),
            }
        };
        self.finish_rotation(&args.service, &answer).into()
    }

    #[tool(
        description = "Return the given text unchanged.",
        annotations(
            title = "Echo",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn echo(&self, Parameters(args): Parameters<EchoArgs>) -> CallToolResult {
        text_result(args.text)
    }

    #[tool(
        description = "Return one content block of every type (text, image, audio, resource link, embedded text and blob resources), structured content and _meta.",
        output_schema = gallery::output_schema(),
        annotations(title = "Content gallery", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn content_gallery(&self) -> CallToolResult {
        gallery::result()
    }

    #[tool(
        description = "Return a tool error (isError: true) with the given message.",
        annotations(
            title = "Fail",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn fail(&self, Parameters(args): Parameters<FailArgs>) -> CallToolResult {
        error_result(args.message)
    }

    #[tool(
        description = "Wait for the given number of milliseconds. A cancelled wait leaves a marker in the sandbox's cancelled/ folder.",
        annotations(
            title = "Sleep",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn sleep(
        &self,
        Parameters(args): Parameters<SleepArgs>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let ms = args.ms.min(MAX_SLEEP_MS);
        let started = Instant::now();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => text_result(format!("slept {ms} ms")),
            () = context.ct.cancelled() => {
                let marker = context.id.to_string();
                let detail = json!({
                    "request_id": marker,
                    "tool": "sleep",
                    "ms": ms,
                    "elapsed_ms": started.elapsed().as_millis() as u64,
                });
                match self.sandbox().record_cancellation(&marker, &detail) {
                    Ok(path) => tracing::info!(path = %path.display(), "sleep cancelled"),
                    Err(err) => tracing::warn!(%err, "could not record cancellation"),
                }
                error_result(format!("cancelled after {} ms", started.elapsed().as_millis()))
            }
        }
    }

    #[tool(
        description = "Exit the server process immediately, without answering (for restart tests).",
        annotations(
            title = "Crash",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn crash(&self) -> CallToolResult {
        tracing::warn!("crash requested: exiting now");
        std::process::exit(70)
    }

    #[tool(
        description = "Add a tool to this server while it runs (sends notifications/tools/list_changed).",
        annotations(
            title = "Add tool",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn add_tool(
        &self,
        Parameters(args): Parameters<AddToolArgs>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        if let Err(err) = self.add_dynamic_tool(&args.name, args.description) {
            return error_result(err);
        }
        self.announce_list_changed(&context).await;
        text_result(format!("added tool {:?}", args.name))
    }

    #[tool(
        description = "Redefine, add or remove tools as tools/list serves them, then send \
                       notifications/tools/list_changed (for tool-integrity tests). Answers how many \
                       tools/list requests were served before the change.",
        annotations(
            title = "Change tools",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn change_tools(
        &self,
        Parameters(args): Parameters<ChangeToolsArgs>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let served = self.tools_list_served();
        if let Err(err) = self.change_catalog(args.set, args.remove) {
            return error_result(err);
        }
        for _ in 0..args.notifications.unwrap_or(1).min(10_000) {
            self.announce_list_changed(&context).await;
        }
        text_result(json!({"tools_list_served": served}).to_string())
    }

    #[tool(
        description = "Change the description tools/list serves for a tool (sends notifications/tools/list_changed).",
        annotations(
            title = "Set description",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn set_description(
        &self,
        Parameters(args): Parameters<SetDescriptionArgs>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        if let Err(err) = self.override_description(&args.tool, args.description) {
            return error_result(err);
        }
        self.announce_list_changed(&context).await;
        text_result(format!("description of {:?} changed", args.tool))
    }
}

impl DemoTools {
    fn finish_rotation(&self, service: &str, answer: &ElicitResult) -> CallToolResult {
        let confirmed = answer
            .content
            .as_ref()
            .and_then(|c| c.get("confirm"))
            .and_then(serde_json::Value::as_bool);
        match (&answer.action, confirmed) {
            (ElicitationAction::Accept, Some(true)) => {
                match self.sandbox().rotate_credentials(service) {
                    Ok(version) => text_result(format!(
                        "rotated credentials of {service:?} (now version {version})"
                    )),
                    Err(err) => sandbox_error(err),
                }
            }
            (ElicitationAction::Accept, _) => error_result(format!(
                "declined: confirm was not ticked; credentials of {service:?} unchanged"
            )),
            (ElicitationAction::Decline, _) => error_result(format!(
                "declined by the user; credentials of {service:?} unchanged"
            )),
            (ElicitationAction::Cancel, _) => error_result(format!(
                "cancelled by the user; credentials of {service:?} unchanged"
            )),
            (other, _) => error_result(format!(
                "unexpected answer {other:?}; credentials of {service:?} unchanged"
            )),
        }
    }
}

/// A form with one required boolean, `confirm`.
fn confirm_params(message: String) -> Result<ElicitRequestParams, CallToolResult> {
    let requested_schema = ElicitationSchema::builder()
        .required_bool("confirm")
        .build()
        .map_err(|err| error_result(format!("could not build the confirmation form: {err}")))?;
    Ok(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema,
    })
}

fn confirm_input_required(message: String) -> Result<InputRequiredResult, CallToolResult> {
    let mut requests = InputRequests::new();
    requests.insert(
        CONFIRM_KEY.to_string(),
        InputRequest::Elicitation(ElicitRequest::new(confirm_params(message)?)),
    );
    Ok(InputRequiredResult::from_input_requests(requests))
}
