//! `[storage]`: which backend keeps the shared state (sled, embedded; or PostgreSQL).
//!
//! Owns: its raw form and validation.
//! Uses: the validator's `problem`, `required` and `env_name`; the checked type
//! `storage::StorageConfig`.
//! Must not: read the URL's variable or connect (that is `storage`, at start and in
//! `airlock check --connect`): the config only names the variable.

use serde::Deserialize;
use toml::Spanned;

use super::raw::Validator;
use crate::storage::{Backend, PgSettings, StorageConfig};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    backend: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    pool_size: Option<Spanned<i64>>,
}

impl Validator<'_, '_> {
    pub(super) fn storage(&mut self, raw: Option<Spanned<RawStorage>>, out: &mut StorageConfig) {
        let Some(raw) = raw else { return };
        let span = raw.span();
        let raw = raw.into_inner();
        let pool_size = match raw.pool_size {
            None => PgSettings::DEFAULT_POOL_SIZE,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(n @ 1..=64) => n,
                _ => {
                    let msg = format!(
                        "key \"storage.pool_size\": must be a number of connections from 1 to 64 (the default is {})",
                        PgSettings::DEFAULT_POOL_SIZE
                    );
                    self.problem(n.span(), msg);
                    PgSettings::DEFAULT_POOL_SIZE
                }
            },
        };
        let backend = raw.backend.as_ref().map_or("sled", |b| b.get_ref().as_str());
        match backend {
            "sled" => {
                if let Some(url_env) = &raw.url_env {
                    let msg = "key \"storage.url_env\": only used with backend = \"postgres\" (the sled backend keeps everything in gateway.data_dir)";
                    self.problem(url_env.span(), msg.to_owned());
                }
                out.backend = Backend::Sled;
            }
            "postgres" => {
                let url_env = self.required(raw.url_env, span, "storage", "url_env");
                if let Some(url_env) = url_env.and_then(|v| self.env_name(&v, "storage.url_env")) {
                    out.backend = Backend::Postgres(PgSettings { url_env, pool_size });
                }
            }
            other => {
                let msg = format!("key \"storage.backend\": must be \"sled\" or \"postgres\", not \"{other}\"");
                let at = raw.backend.as_ref().map_or(span, Spanned::span);
                self.problem(at, msg);
            }
        }
    }
}
