//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, never in a
//! release build).
//!
//! Owns: nothing. Each function is a thin wrapper that calls the private parser the
//! gateway itself uses, so a target exercises the real code, not a copy.
//! Uses: the parsers of `identity`, `http`, `downstream`, `approval::slack` and `audit`.
//! Must not: re-implement any parsing (a change to a parser must reach its target as is),
//! or be used by the gateway.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::approval::outbound::Secret;
use crate::identity::Caller;

/// The Host/Origin guard's verdict on a request's headers (`http::guard`).
pub fn host_guard_verdict(guard: &crate::http::HostGuard, headers: &HeaderMap) -> Result<(), &'static str> {
    guard.verdict(headers)
}

/// Takes every complete event off `buffer` as the legacy SSE client does, returning
/// `(event, data)` pairs (`downstream::sse_client::take_event`).
pub fn sse_take_events(buffer: &mut String) -> Vec<(String, String)> {
    std::iter::from_fn(|| crate::downstream::sse_client::take_event(buffer)).collect()
}

/// The Slack interactions endpoint's check and parse: signature on the raw bytes, then
/// `payload=<json>` out of the form (`approval::slack::interactions::Handler::verify`).
pub fn slack_interaction(
    secret: &Secret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Value, crate::approval::slack::Refused> {
    let users: BTreeMap<String, Caller> = BTreeMap::new();
    crate::approval::slack::interactions::Handler::new(secret, users).verify(timestamp, signature, body)
}

/// What [`jwt`] found, for the target to check invariants on.
#[derive(Debug)]
pub struct JwtOutcome {
    /// `jwt::parse` succeeded.
    pub parsed: bool,
    /// The signature verified against the key the JWKS has for its `kid`.
    pub verified: bool,
    /// `jwt::check_claims` accepted the (unverified) claims.
    pub claims_ok: bool,
}

/// A bearer JWT through the OIDC steps that need no network: `jwt::parse`, the key for
/// its `kid` from `jwt::parse_jwks(jwks)`, `verify`, and `check_claims` (run even when
/// the signature fails, since a fuzzer cannot sign; the gateway runs it only after).
pub fn jwt(token: &str, jwks: &Value, issuer: &str, audience: &str, groups_claim: Option<&str>, now: i64) -> JwtOutcome {
    use crate::identity::jwt;
    let Ok(parsed) = jwt::parse(token) else {
        return JwtOutcome { parsed: false, verified: false, claims_ok: false };
    };
    let _ = parsed.claimed_issuer();
    let keys = jwt::parse_jwks(jwks).unwrap_or_default();
    // As the gateway does: every key published under that `kid` is tried.
    let verified = keys.get(&parsed.kid).is_some_and(|keys| keys.iter().any(|key| parsed.verify(key).is_ok()));
    let rules = jwt::ClaimRules { issuer, audience, groups_claim };
    let claims_ok = jwt::check_claims(&parsed.claims, &rules, now).is_ok();
    JwtOutcome { parsed: true, verified, claims_ok }
}

/// The `kid`s a JWKS document yields (`jwt::parse_jwks`), `None` when it is not one.
pub fn jwks_kids(doc: &Value) -> Option<Vec<String>> {
    crate::identity::jwt::parse_jwks(doc).map(|keys| keys.into_keys().collect())
}

/// `jwt::check_claims` alone, on a claims object.
pub fn jwt_claims(claims: &Map<String, Value>, issuer: &str, audience: &str, groups_claim: Option<&str>, now: i64) -> bool {
    let rules = crate::identity::jwt::ClaimRules { issuer, audience, groups_claim };
    crate::identity::jwt::check_claims(claims, &rules, now).is_ok()
}

/// The audit writer's state record as read back from the database (`audit::store::State::decode`),
/// re-encoded when it parses.
pub fn audit_state_roundtrip(bytes: &[u8]) -> Option<Vec<u8>> {
    crate::audit::store::State::decode(bytes).map(|state| state.encode())
}
