//! The demo server's resources and its one prompt, for pass-through tests.
//!
//! Owns: `demo://customers` and `demo://logs/<file>` (read from the sandbox) and the
//! `incident_summary` prompt.
//! Uses: `sandbox` for the data, rmcp's resource and prompt model.
//! Must not: write anything.

use rmcp::ErrorData;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResult, Prompt, PromptArgument, PromptMessage,
    ReadResourceResult, Resource, ResourceContents, Role,
};

use super::sandbox::Sandbox;

/// URI of the customer list resource.
pub(super) const CUSTOMERS_URI: &str = "demo://customers";
const LOG_FILES: &[&str] = &["api.log", "auth.log", "billing.log"];

/// The resources `resources/list` serves.
pub(super) fn resources() -> Vec<Resource> {
    let mut list = vec![
        Resource::new(CUSTOMERS_URI, "customers")
            .with_title("Customers")
            .with_description("All customer records of the demo sandbox")
            .with_mime_type("application/json"),
    ];
    for file in LOG_FILES {
        list.push(
            Resource::new(format!("demo://logs/{file}"), *file)
                .with_description(format!("The {file} service log"))
                .with_mime_type("text/plain"),
        );
    }
    list
}

/// Reads one resource by URI.
pub(super) fn read_resource(sandbox: &Sandbox, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let not_found = || ErrorData::resource_not_found(format!("no such resource: {uri}"), None);
    let (path, mime) = if uri == CUSTOMERS_URI {
        (sandbox.root().join("customers.json"), "application/json")
    } else {
        let file = uri.strip_prefix("demo://logs/").ok_or_else(not_found)?;
        if !LOG_FILES.contains(&file) {
            return Err(not_found());
        }
        (sandbox.root().join("logs").join(file), "text/plain")
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|err| ErrorData::internal_error(format!("{}: {err}", path.display()), None))?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type(mime),
    ]))
}

/// The prompts `prompts/list` serves.
pub(super) fn prompts() -> Vec<Prompt> {
    vec![Prompt::new(
        "incident_summary",
        Some("Summarise recent errors of one service from its logs"),
        Some(vec![
            PromptArgument::new("service")
                .with_description("Service name: api, auth or billing")
                .with_required(true),
        ]),
    )]
}

/// Renders a prompt.
pub(super) fn get_prompt(request: &GetPromptRequestParams) -> Result<GetPromptResult, ErrorData> {
    if request.name != "incident_summary" {
        return Err(ErrorData::invalid_params(
            format!("no such prompt: {}", request.name),
            None,
        ));
    }
    let service = request
        .arguments
        .as_ref()
        .and_then(|a| a.get("service"))
        .and_then(|s| s.as_str())
        .ok_or_else(|| ErrorData::invalid_params("argument `service` is required", None))?;
    let text = format!(
        "Use search_logs to find ERROR lines of the {service} service, then summarise what \
         failed, since when, and which customers are affected."
    );
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(format!("Incident summary for {service}")),
    )
}
