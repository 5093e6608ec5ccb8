//! `[http]` limits: timeouts, connection counts, body sizes and session caps.
//!
//! Owns: their raw form and validation (each a positive number, sizes like `"4MiB"`).
//! Uses: `parse_size` and the validator's `duration` and `problem`.
//! Must not: apply them (that is `http`).

use toml::Spanned;

use super::raw::Validator;
use super::{HttpLimits, parse_size};

/// The limit keys of `[http]`, as written.
pub(super) struct RawLimits {
    pub(super) header_read_timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_connections_per_address: Option<Spanned<i64>>,
    pub(super) max_body_mcp: Option<Spanned<String>>,
    pub(super) max_body: Option<Spanned<String>>,
    pub(super) max_sessions_per_principal: Option<Spanned<i64>>,
    pub(super) max_sessions: Option<Spanned<i64>>,
}

impl Validator<'_, '_> {
    pub(super) fn http_limits(&mut self, raw: RawLimits, out: &mut HttpLimits) {
        for (value, key, slot) in [
            (raw.header_read_timeout, "http.header_read_timeout", &mut out.header_read_timeout),
            (raw.idle_timeout, "http.idle_timeout", &mut out.idle_timeout),
        ] {
            if let Some(d) = value.and_then(|v| self.duration(&v, key)) {
                *slot = d;
            }
        }
        for (value, key, slot) in [
            (raw.max_connections, "http.max_connections", &mut out.max_connections),
            (raw.max_connections_per_address, "http.max_connections_per_address", &mut out.max_connections_per_address),
            (raw.max_sessions_per_principal, "http.max_sessions_per_principal", &mut out.max_sessions_per_principal),
            (raw.max_sessions, "http.max_sessions", &mut out.max_sessions),
        ] {
            let Some(value) = value else { continue };
            match usize::try_from(*value.get_ref()) {
                Ok(n) if n > 0 => *slot = n,
                _ => self.problem(value.span(), format!("key \"{key}\": must be a whole number above zero")),
            }
        }
        for (value, key, slot) in [
            (raw.max_body_mcp, "http.max_body_mcp", &mut out.max_body_mcp),
            (raw.max_body, "http.max_body", &mut out.max_body),
        ] {
            let Some(value) = value else { continue };
            match parse_size(value.get_ref()) {
                Ok(n) => *slot = n,
                Err(why) => self.problem(value.span(), format!("key \"{key}\": {why}")),
            }
        }
    }
}
