//! Sealed `requestState` for 2026-07-28 confirmations.
//!
//! A modern client cannot be asked mid-call, so a `confirm` hold answers with an
//! `InputRequiredResult` and the client retries with the answer and the state we gave it.
//! The state binds the retry to the hold: caller, tool, argument digest, expiry and a
//! single-use nonce, under HMAC-SHA256 with a key made at gateway start (holds do not
//! survive a restart, so neither need their states). Form: `airlock.v1.<claims>.<tag>`,
//! both parts base64url without padding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::ApprovalId;

const PREFIX: &str = "airlock.v1.";

/// What a sealed state says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub purpose: Purpose,
    pub approval_id: ApprovalId,
    pub caller: String,
    pub tool: String,
    pub args_sha256: String,
    pub expires_ms: u64,
    pub nonce: String,
    /// A downstream's own `requestState`, carried through a `Continue` round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner: Option<String>,
}

/// Why the state was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Airlock's own confirmation question (a `confirm` hold).
    Confirm,
    /// A downstream asked for input while running an approved call: the retry is the
    /// same execution, so it continues without a second approval.
    Continue,
}

/// Why a state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the request state is not one this gateway issued")]
    Malformed,
    #[error("the request state was altered or was issued before the gateway restarted")]
    BadTag,
    #[error("the request state expired")]
    Expired,
}

/// Seals and opens states with one HMAC key.
pub struct Sealer {
    key: hmac::Key,
}

impl Sealer {
    /// A sealer with a fresh random key.
    pub fn generate() -> Sealer {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            // The system RNG does not fail on Linux; a fixed key here would be forgeable,
            // so derive one from the process's address-space and time as a last resort.
            let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &rng);
            hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes())
        });
        Sealer { key }
    }

    /// The state text for `claims`.
    pub fn seal(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{PREFIX}{body}.{}", B64.encode(tag.as_ref()))
    }

    /// Checks the tag (in constant time), then the expiry, and returns the claims.
    pub fn open(&self, state: &str, now_ms: u64) -> Result<Claims, SealError> {
        let rest = state.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let (body, tag) = rest.split_once('.').ok_or(SealError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| SealError::Malformed)?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| SealError::BadTag)?;
        let bytes = B64.decode(body).map_err(|_| SealError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| SealError::Malformed)?;
        if now_ms >= claims.expires_ms {
            return Err(SealError::Expired);
        }
        Ok(claims)
    }
}

/// True for states this gateway issues (others belong to a downstream).
pub fn is_ours(state: &str) -> bool {
    state.starts_with(PREFIX)
}
