//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, never in a
//! release build).
//!
//! Owns: nothing. Each function is a thin wrapper that calls the private parser the
//! gateway itself uses, so a target exercises the real code, not a copy.
//! Uses: the parsers of `identity`, `http`, `downstream`, `approval::slack`, `control` and
//! `audit` (its journal's replay).
//! Must not: re-implement any parsing (a change to a parser must reach its target as is),
//! or be used by the gateway.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

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

/// What the gateway side of a control connection read (`control::server`): the hello line
/// as `connection` parses it, then (mode `op`) each request line as `op_loop` parses it.
#[derive(Debug)]
pub struct ControlRequests {
    pub hello: Result<crate::control::Hello, String>,
    /// Each op line: the request, or why it was refused (a line too long ends the list).
    pub requests: Vec<Result<crate::control::Request, String>>,
}

/// Reads `bytes` as a peer's side of a control connection, with the gateway's own line
/// reader (`control::read_line`) and parses; `None` when the peer sent nothing.
pub async fn control_requests(mut bytes: &[u8]) -> Option<ControlRequests> {
    use crate::control::{Hello, Mode, Request, read_line};
    let hello = match read_line(&mut bytes).await {
        Ok(Some(line)) => serde_json::from_slice::<Hello>(&line).map_err(|e| e.to_string()),
        Ok(None) => return None,
        Err(error) => Err(error.to_string()),
    };
    let mut requests = Vec::new();
    if hello.as_ref().is_ok_and(|h| h.mode == Mode::Op) {
        loop {
            match read_line(&mut bytes).await {
                Ok(Some(line)) => requests.push(serde_json::from_slice::<Request>(&line).map_err(|e| e.to_string())),
                Ok(None) => break,
                Err(error) => {
                    requests.push(Err(error.to_string()));
                    break;
                }
            }
        }
    }
    Some(ControlRequests { hello, requests })
}

/// What the client side of a control connection read (`control::client`): the hello reply,
/// then (when welcomed) the reply lines, up to the first unreadable one.
#[derive(Debug)]
pub struct ControlReplies {
    pub hello: Result<crate::control::HelloReply, String>,
    pub replies: Vec<crate::control::Reply>,
    /// Why the client stopped reading before the end (an unreadable or too long line).
    pub broken: Option<String>,
}

/// Reads `bytes` as the gateway's side of a control connection, with the client's line
/// reader and parses.
pub async fn control_replies(mut bytes: &[u8]) -> ControlReplies {
    use crate::control::{HelloReply, Reply, read_line};
    let hello = match read_line(&mut bytes).await {
        Ok(Some(line)) => serde_json::from_slice::<HelloReply>(&line).map_err(|e| e.to_string()),
        Ok(None) => Err("closed".to_owned()),
        Err(error) => Err(error.to_string()),
    };
    let mut replies = Vec::new();
    let mut broken = None;
    if matches!(hello, Ok(HelloReply::Ok(_))) {
        loop {
            match read_line(&mut bytes).await {
                Ok(Some(line)) => match serde_json::from_slice::<Reply>(&line) {
                    Ok(reply) => replies.push(reply),
                    Err(error) => {
                        broken = Some(error.to_string());
                        break;
                    }
                },
                Ok(None) => break,
                Err(error) => {
                    broken = Some(error.to_string());
                    break;
                }
            }
        }
    }
    ControlReplies { hello, replies, broken }
}

/// `audit::journal::replay` of a journal file holding `bytes` into a database that durably
/// held `stored` checkpoints: `(groups applied, clean)`, or the error's text.
///
/// One scratch directory and sled database per process, under `$AIRLOCK_FUZZ_SCRATCH`
/// (else the temp dir); the database is cleared after a replay that applied groups, so
/// every input starts from an empty one (replay reads only the file and `stored`).
pub fn journal_replay(bytes: &[u8], stored: u64) -> Result<(usize, bool), String> {
    static SCRATCH: OnceLock<(PathBuf, sled::Db)> = OnceLock::new();
    let (dir, db) = SCRATCH.get_or_init(|| {
        let base = std::env::var_os("AIRLOCK_FUZZ_SCRATCH").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = base.join(format!("airlock-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory for the journal target");
        let db = sled::Config::new().path(dir.join("audit")).temporary(true).open().expect("a scratch sled database");
        (dir, db)
    });
    let path = dir.join("audit.journal");
    std::fs::write(&path, bytes).expect("the scratch journal is writable");
    let replayed = crate::audit::journal_replay(&path, db, crate::audit::JournalStored { seq: 0, checkpoints: stored }).map_err(|e| e.to_string())?;
    if replayed.applied > 0 {
        db.clear().expect("the scratch database clears");
    }
    Ok((replayed.applied, replayed.clean))
}
