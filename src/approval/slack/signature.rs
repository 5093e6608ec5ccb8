//! Slack request signatures (v0): the check that runs before anything of a request is
//! parsed.
//!
//! `X-Slack-Signature` is `v0=` and the hex HMAC-SHA256, keyed with the signing secret,
//! of `v0:{X-Slack-Request-Timestamp}:{raw body}`. A timestamp more than five minutes
//! from now is refused, and so is a signature already accepted inside that window (a
//! captured request replayed).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use ring::hmac;

use crate::approval::outbound::Secret;

/// How far a request's timestamp may be from now, either way (Slack's recommendation).
pub const WINDOW_SECS: i64 = 300;

/// Why a request was refused. Every variant is a 401: the sender is not proven to be
/// Slack, or the request is not fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("X-Slack-Request-Timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("request timestamp is more than {WINDOW_SECS} s from now")]
    Stale,
    #[error("X-Slack-Signature does not match the body")]
    BadSignature,
    #[error("this signed request was already received")]
    Replayed,
}

/// Checks signatures and remembers the ones it accepted for the window.
pub struct Verifier {
    key: hmac::Key,
    /// Accepted signature → its timestamp; entries leave once the window has passed, when
    /// the timestamp check alone refuses them.
    seen: Mutex<HashMap<String, i64>>,
}

impl Verifier {
    /// A verifier for `secret`.
    pub fn new(secret: &Secret) -> Verifier {
        Verifier { key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()), seen: Mutex::new(HashMap::new()) }
    }

    /// Verifies one request at `now` (unix seconds). Only on success is the signature
    /// remembered: a forged request carrying a copied signature must not lock out the
    /// genuine one.
    pub fn verify(&self, timestamp: Option<&str>, signature: Option<&str>, body: &[u8], now: i64) -> Result<(), Rejection> {
        let timestamp = timestamp.ok_or(Rejection::MissingHeader("X-Slack-Request-Timestamp"))?;
        let signature = signature.ok_or(Rejection::MissingHeader("X-Slack-Signature"))?;
        let seconds: i64 = timestamp.trim().parse().map_err(|_| Rejection::BadTimestamp)?;
        if now.abs_diff(seconds) > WINDOW_SECS.unsigned_abs() {
            return Err(Rejection::Stale);
        }
        let tag = signature
            .strip_prefix("v0=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or(Rejection::BadSignature)?;
        let mut message = Vec::with_capacity(body.len() + timestamp.len() + 4);
        message.extend_from_slice(b"v0:");
        message.extend_from_slice(timestamp.as_bytes());
        message.push(b':');
        message.extend_from_slice(body);
        // ring compares the tags in constant time.
        hmac::verify(&self.key, &message, &tag).map_err(|_| Rejection::BadSignature)?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, at| now.abs_diff(*at) <= WINDOW_SECS.unsigned_abs());
        let key = hex::encode(&tag);
        if seen.contains_key(&key) {
            return Err(Rejection::Replayed);
        }
        seen.insert(key, seconds);
        Ok(())
    }
}

/// The `X-Slack-Signature` for `body` at `timestamp`: what Slack sends. For tests and the
/// interop fake; the verifier does not use it (it compares through `hmac::verify`).
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(b"v0:");
    context.update(timestamp.as_bytes());
    context.update(b":");
    context.update(body);
    format!("v0={}", hex::encode(context.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's own published example (tests/vectors/slack_signature.json).
    fn vector() -> (Secret, String, String, String) {
        let v: serde_json::Value = serde_json::from_str(include_str!("../../../tests/vectors/slack_signature.json")).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        (Secret::new(s("signing_secret")), s("timestamp"), s("body"), s("signature"))
    }

    #[test]
    fn slacks_published_example_verifies() {
        let (secret, ts, body, sig) = vector();
        let now: i64 = ts.parse().unwrap();
        assert_eq!(Verifier::new(&secret).verify(Some(&ts), Some(&sig), body.as_bytes(), now + 10), Ok(()));
        assert_eq!(sign(&secret, &ts, body.as_bytes()), sig);
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let (secret, ts, body, sig) = vector();
        let now: i64 = ts.parse().unwrap();
        let tampered = body.replace("roadrunner", "wile-e");
        assert_eq!(
            Verifier::new(&secret).verify(Some(&ts), Some(&sig), tampered.as_bytes(), now),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn a_timestamp_outside_five_minutes_is_refused_either_way() {
        let (secret, ts, body, sig) = vector();
        let at: i64 = ts.parse().unwrap();
        let verifier = Verifier::new(&secret);
        assert_eq!(verifier.verify(Some(&ts), Some(&sig), body.as_bytes(), at + 301), Err(Rejection::Stale));
        assert_eq!(verifier.verify(Some(&ts), Some(&sig), body.as_bytes(), at - 301), Err(Rejection::Stale));
        assert_eq!(verifier.verify(Some(&ts), Some(&sig), body.as_bytes(), at + 300), Ok(()));
    }

    #[test]
    fn a_replayed_signature_is_refused() {
        let (secret, ts, body, sig) = vector();
        let now: i64 = ts.parse().unwrap();
        let verifier = Verifier::new(&secret);
        assert_eq!(verifier.verify(Some(&ts), Some(&sig), body.as_bytes(), now), Ok(()));
        assert_eq!(verifier.verify(Some(&ts), Some(&sig), body.as_bytes(), now + 1), Err(Rejection::Replayed));
    }

    #[test]
    fn a_forged_copy_does_not_lock_out_the_genuine_request() {
        let (secret, ts, body, sig) = vector();
        let now: i64 = ts.parse().unwrap();
        let verifier = Verifier::new(&secret);
        assert_eq!(verifier.verify(Some(&ts), Some(&sig), b"payload=forged", now), Err(Rejection::BadSignature));
        assert_eq!(verifier.verify(Some(&ts), Some(&sig), body.as_bytes(), now), Ok(()));
    }

    #[test]
    fn missing_or_malformed_headers_are_refused() {
        let (secret, ts, body, sig) = vector();
        let verifier = Verifier::new(&secret);
        let now: i64 = ts.parse().unwrap();
        assert_eq!(verifier.verify(None, Some(&sig), body.as_bytes(), now), Err(Rejection::MissingHeader("X-Slack-Request-Timestamp")));
        assert_eq!(verifier.verify(Some(&ts), None, body.as_bytes(), now), Err(Rejection::MissingHeader("X-Slack-Signature")));
        assert_eq!(verifier.verify(Some("soon"), Some(&sig), body.as_bytes(), now), Err(Rejection::BadTimestamp));
        assert_eq!(verifier.verify(Some(&ts), Some("v1=00"), body.as_bytes(), now), Err(Rejection::BadSignature));
        assert_eq!(verifier.verify(Some(&ts), Some("v0=zz"), body.as_bytes(), now), Err(Rejection::BadSignature));
    }
}
