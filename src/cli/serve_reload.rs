//! Where `airlock serve` builds its reloader and how SIGHUP drives it.
//!
//! Owns: the loader handed to `gateway::Reloader` (the `airlock check` code, reading the
//! file the gateway started from) and the SIGHUP task; what a reload prints to stderr.
//! Uses: `gateway::Reloader`, `check::load_everything`.
//! Must not: decide what a reload changes (that is `gateway::reload`).

use std::path::Path;
use std::sync::Arc;

use crate::gateway::reload::Starting;
use crate::gateway::{Gateway, Loader, Reloader};

/// The reloader every trigger (SIGHUP, the control socket) calls, comparing reloads
/// against what the gateway started from (`starting`, whose `config_loaded` it recorded).
pub(crate) fn start(gateway: &Arc<Gateway>, config_file: Option<&Path>, starting: Starting) -> Arc<Reloader> {
    let arg = super::ConfigArg { config: config_file.map(Path::to_path_buf) };
    let load: Arc<Loader> = Arc::new(move || match super::check::load_everything(&arg) {
        Ok(checked) => checked,
        // The file the gateway started from is gone: the same message `check` prints.
        Err(error) => {
            let file = arg.config.clone().unwrap_or_else(|| "airlock.toml".into());
            let (config, mut problems) = crate::config::Config::load_partial(Some(&file));
            problems.push(crate::config::Problem::file(&file, error.to_string()));
            super::check::Checked { config, manifests: Vec::new(), policies: crate::policy::PolicySet::empty(), problems }
        }
    });
    Reloader::start(gateway.clone(), starting, load)
}

/// Reloads on every SIGHUP until the gateway stops; each outcome goes to stderr and the log.
#[allow(clippy::print_stderr)]
pub(crate) async fn on_sighup(reloader: Arc<Reloader>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload needs the control socket");
        return;
    };
    while hangups.recv().await.is_some() {
        match reloader.reload().await {
            Ok(report) => {
                let changed = serde_json::to_string(&report).unwrap_or_default();
                tracing::info!(policy_sha256 = %report.policy_sha256, "reloaded");
                eprintln!("airlock: reloaded: {changed}");
            }
            Err(error) => {
                tracing::error!("reload refused; the running configuration stays in force");
                eprintln!("airlock: reload refused; the running configuration stays in force:\n{error}");
            }
        }
    }
}
