//! `tools_list` and `tools_accept` on a running gateway, and the rows both the gateway and
//! the offline `airlock tools list` print.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ops::{OpContext, to_value};
use super::{Refusal, RefusalCode};
use crate::gateway::fingerprints::FingerprintError;
use crate::gateway::{Gateway, Vetted};

/// One exposed tool as `airlock tools list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRow {
    pub tool: String,
    pub server: String,
    /// The effective risk (`critical` while a changed or new tool is not accepted).
    pub risk: String,
    /// `trusted`, `new`, `changed` or `unaccepted`.
    pub status: String,
    pub fingerprint: String,
    /// Where the risk comes from.
    pub source: String,
}

/// The rows of a vetted catalog, in exposed-name order.
pub fn tool_rows(catalog: &Vetted) -> Vec<ToolRow> {
    catalog
        .tools()
        .map(|tool| {
            let (risk, source) = tool.risk();
            ToolRow {
                tool: tool.name().to_owned(),
                server: tool.entry.server.name().to_owned(),
                risk: risk.as_str().to_owned(),
                status: tool.status.as_str().to_owned(),
                fingerprint: tool.fingerprint.to_string(),
                source: source.describe().to_owned(),
            }
        })
        .collect()
}

/// The catalog the gateway serves now.
pub(super) fn list(gateway: &Arc<Gateway>) -> Result<Value, Refusal> {
    to_value(&tool_rows(&gateway.catalog()))
}

pub(super) async fn accept(ctx: &OpContext<'_>, name: &str) -> Result<Value, Refusal> {
    match ctx.control.gateway.accept_tool(name).await {
        Ok(fingerprint) => {
            tracing::info!(by = %ctx.peer.describe(), tool = name, %fingerprint, "tool accepted over the control socket");
            Ok(json!({"tool": name, "fingerprint": fingerprint}))
        }
        Err(error @ FingerprintError::Unknown(_)) => Err(Refusal::new(RefusalCode::Failed, error.to_string())),
        Err(error) => Err(Refusal::new(RefusalCode::Failed, format!("could not accept {name}: {error}"))),
    }
}
