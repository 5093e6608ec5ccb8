//! The `reload` request's seam: the gateway's live reload is registered on its
//! [`Control`](super::Control) by whoever builds the gateway ([`Control::set_reload`]).
//!
//! Until one is registered, `reload` answers `failed` with "this gateway cannot reload":
//! nothing pretends to have re-read a file.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::ops::OpContext;
use super::{Refusal, RefusalCode};

/// Why a reload was refused: the running set stays active.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .diagnostics.join("\n"))]
pub struct ReloadRefused {
    /// `file:line: message` lines, as `airlock check` prints them.
    pub diagnostics: Vec<String>,
}

/// The answer of a reload: a JSON-serialisable report (what changed), or the refusal.
pub type ReloadOutcome = Result<Value, ReloadRefused>;

/// The gateway's reload entry point.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads `airlock.toml`, manifests and policies, validates everything first, and
    /// swaps them in, or refuses and keeps the running set.
    fn reload(&self) -> Pin<Box<dyn Future<Output = ReloadOutcome> + Send + '_>>;
}

pub(super) async fn reload(ctx: &OpContext<'_>) -> Result<Value, Refusal> {
    let Some(reloader) = ctx.control.reload.get() else {
        return Err(Refusal::new(
            RefusalCode::Failed,
            "this gateway cannot reload (no reload is registered); restart it to apply configuration changes",
        ));
    };
    tracing::info!(by = %ctx.peer.describe(), "reload requested over the control socket");
    reloader.reload().await.map_err(|refused| Refusal::new(RefusalCode::ReloadRefused, refused.to_string()))
}

/// The live reload of `gateway::reload`, as the socket's `reload` request calls it.
impl Reload for crate::gateway::Reloader {
    fn reload(&self) -> Pin<Box<dyn Future<Output = ReloadOutcome> + Send + '_>> {
        Box::pin(async move {
            match crate::gateway::Reloader::reload(self).await {
                Ok(report) => serde_json::to_value(&report).map_err(|e| ReloadRefused { diagnostics: vec![e.to_string()] }),
                // Displays as `airlock check` prints it: one `file:line: message` a line.
                Err(error) => Err(ReloadRefused { diagnostics: error.to_string().lines().map(str::to_owned).collect() }),
            }
        })
    }
}
