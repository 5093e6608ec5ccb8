//! Signed cookies for the approver page: the sign-in session, the short-lived state of an
//! OpenID Connect sign-in in progress, and the CSRF tokens tied to a session.
//!
//! Owns: the HMAC key (made at start, so a restart signs everyone out), the cookie
//! formats, the constant-time checks, and the table of live sessions: a cookie counts
//! only while its session is in that table, so signing out ends it on the server (the old
//! cookie is refused), a session unused for the idle timeout ends, and none outlives the
//! credential it was made with (a JWT's `exp`) or its lifetime.
//! Uses: `ring` (HMAC-SHA256, random), `identity` (`Caller`, `Principal`).
//! Must not: decide anything about approvals.
//!
//! A cookie value is `base64url(json) "." base64url(HMAC(key, purpose "\0" base64url(json)))`;
//! the purpose keeps a sign-in cookie from being replayed as a session and the other way round.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::identity::{AuthMethod, Caller, Holder, Person, Principal};

/// Name of the session cookie.
pub(super) const SESSION_COOKIE: &str = "airlock_session";
/// Name of the cookie that carries an OIDC sign-in between redirect and callback.
pub(super) const LOGIN_COOKIE: &str = "airlock_login";
/// How long an OIDC sign-in may take, in seconds.
pub(super) const LOGIN_LIFETIME_SECS: u64 = 600;

const PURPOSE_SESSION: &[u8] = b"session";
const PURPOSE_LOGIN: &[u8] = b"login";
const PURPOSE_CSRF: &[u8] = b"csrf";

/// Why random bytes could not be had (the system RNG does not fail on Linux in practice).
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// Live sessions kept at most; past it the one unused longest is ended first.
const MAX_LIVE: usize = 10_000;

/// A session the server still honours.
struct Live {
    last_seen: Instant,
    /// Unix seconds.
    expires_at: u64,
}

/// The page's HMAC key and its live sessions.
pub(super) struct Keys {
    key: hmac::Key,
    live: Mutex<HashMap<String, Live>>,
    idle: Duration,
}

impl Keys {
    /// A fresh key from the system RNG; sessions unused for `idle` end.
    pub(super) fn generate(idle: Duration) -> Result<Keys, RandomError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).map_err(|_| RandomError)?;
        Ok(Keys { key, live: Mutex::new(HashMap::new()), idle })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        // A poisoned lock only means a panic elsewhere mid-update; the table is still valid.
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends session `sid` on the server: its cookie is refused from now on.
    pub(super) fn end(&self, sid: &str) {
        self.live().remove(sid);
    }

    fn tag(&self, purpose: &[u8], body: &str) -> hmac::Tag {
        hmac::sign(&self.key, &message(purpose, body))
    }

    fn seal<T: Serialize>(&self, purpose: &[u8], value: &T) -> String {
        // Our own plain structs: serialising them cannot fail.
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default());
        let tag = URL_SAFE_NO_PAD.encode(self.tag(purpose, &body).as_ref());
        format!("{body}.{tag}")
    }

    /// The value inside a cookie this key sealed for `purpose`; `None` for anything else.
    fn open<T: for<'de> Deserialize<'de>>(&self, purpose: &[u8], cookie: &str) -> Option<T> {
        let (body, tag) = cookie.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // `hmac::verify` compares in constant time.
        hmac::verify(&self.key, &message(purpose, body), &tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }

    /// A new session for `caller`: the cookie value and how many seconds it lasts, at most
    /// `lifetime_secs` and never past the credential's own expiry.
    pub(super) fn session(&self, caller: &Caller, lifetime_secs: u64) -> Result<(String, u64), RandomError> {
        let now = unix_now();
        let exp = caller.expires_at.map_or(now.saturating_add(lifetime_secs), |e| e.min(now.saturating_add(lifetime_secs)));
        let session = SessionData {
            principal: caller.principal.as_str().to_owned(),
            groups: caller.groups.clone(),
            via: caller.via,
            human: caller.holder == Holder::Human,
            person: caller.person.as_ref().map(|p| p.as_str().to_owned()),
            name: caller.display_name.clone(),
            sid: random_text()?,
            exp,
        };
        let mut live = self.live();
        if live.len() >= MAX_LIVE {
            let idle = self.idle;
            live.retain(|_, l| l.expires_at > now && l.last_seen.elapsed() < idle);
            if live.len() >= MAX_LIVE
                && let Some(oldest) = live.iter().min_by_key(|(_, l)| l.last_seen).map(|(sid, _)| sid.clone())
            {
                live.remove(&oldest);
            }
        }
        live.insert(session.sid.clone(), Live { last_seen: Instant::now(), expires_at: exp });
        Ok((self.seal(PURPOSE_SESSION, &session), exp.saturating_sub(now)))
    }

    /// The signed-in person of a session cookie, unless it is forged, expired, signed out
    /// or idle too long; a session that answers counts as used now.
    pub(super) fn open_session(&self, cookie: &str) -> Option<Session> {
        let data: SessionData = self.open(PURPOSE_SESSION, cookie)?;
        let now = unix_now();
        let mut live = self.live();
        let entry = live.get_mut(&data.sid)?;
        if data.exp <= now || entry.expires_at <= now || entry.last_seen.elapsed() >= self.idle {
            live.remove(&data.sid);
            return None;
        }
        entry.last_seen = Instant::now();
        drop(live);
        let principal = Principal::new(data.principal).ok()?;
        let person = data.person.map(Person::new).transpose().ok()?;
        let holder = if data.human { Holder::Human } else { Holder::Unverified };
        let caller = Caller {
            person,
            holder,
            expires_at: Some(data.exp),
            display_name: data.name,
            ..Caller::new(principal, data.groups, data.via)
        };
        Some(Session { caller, sid: data.sid })
    }

    /// A sign-in cookie value.
    pub(super) fn login(&self, login: &Login) -> String {
        self.seal(PURPOSE_LOGIN, login)
    }

    /// The sign-in in progress, unless forged or older than [`LOGIN_LIFETIME_SECS`].
    pub(super) fn open_login(&self, cookie: &str) -> Option<Login> {
        let login: Login = self.open(PURPOSE_LOGIN, cookie)?;
        (login.exp > unix_now()).then_some(login)
    }

    /// The CSRF token of session `sid`: forms carry it, a cross-site page cannot read it.
    pub(super) fn csrf(&self, sid: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.tag(PURPOSE_CSRF, sid).as_ref())
    }

    /// True when `token` is the CSRF token of session `sid` (constant-time comparison).
    pub(super) fn csrf_ok(&self, sid: &str, token: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(token.trim())
            .is_ok_and(|tag| hmac::verify(&self.key, &message(PURPOSE_CSRF, sid), &tag).is_ok())
    }
}

fn message(purpose: &[u8], body: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(purpose.len() + 1 + body.len());
    message.extend_from_slice(purpose);
    message.push(0);
    message.extend_from_slice(body.as_bytes());
    message
}

/// What a session cookie holds.
#[derive(Serialize, Deserialize)]
struct SessionData {
    #[serde(rename = "p")]
    principal: String,
    #[serde(rename = "g")]
    groups: Vec<String>,
    via: AuthMethod,
    #[serde(rename = "h")]
    human: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    person: Option<String>,
    /// The display name (`Caller::display_name`).
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    sid: String,
    exp: u64,
}

/// A signed-in person and the id their CSRF token is bound to.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) caller: Caller,
    pub(super) sid: String,
}

/// An OpenID Connect sign-in between the redirect to the issuer and the callback.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Login {
    /// The `state` sent to the issuer; the callback must bring it back.
    pub(super) state: String,
    /// The `nonce` the ID token must carry.
    pub(super) nonce: String,
    /// The PKCE code verifier (RFC 7636); its S256 challenge went to the issuer.
    pub(super) verifier: String,
    /// Where to go once signed in (a checked local path).
    pub(super) next: String,
    pub(super) exp: u64,
}

impl Login {
    /// A new sign-in with fresh random state, nonce and verifier.
    pub(super) fn start(next: String) -> Result<Login, RandomError> {
        Ok(Login {
            state: random_text()?,
            nonce: random_text()?,
            verifier: random_text()?,
            next,
            exp: unix_now().saturating_add(LOGIN_LIFETIME_SECS),
        })
    }

    /// The S256 code challenge of the verifier.
    pub(super) fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, self.verifier.as_bytes()).as_ref())
    }
}

/// 32 random bytes as base64url (43 characters, valid as a PKCE verifier).
pub(super) fn random_text() -> Result<String, RandomError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Caller {
        Caller::new(Principal::new("alice").unwrap(), vec!["sre".into()], AuthMethod::StaticToken)
    }

    fn keys() -> Keys {
        Keys::generate(Duration::from_secs(600)).unwrap()
    }

    #[test]
    fn a_session_opens_with_its_key_only() {
        let keys = keys();
        let (cookie, _) = keys.session(&alice(), 60).unwrap();
        let session = keys.open_session(&cookie).unwrap();
        assert_eq!(session.caller.principal, alice().principal);
        assert_eq!(session.caller.via, AuthMethod::StaticToken);
        assert!(self::keys().open_session(&cookie).is_none());
    }

    #[test]
    fn a_tampered_or_expired_session_is_refused() {
        let keys = keys();
        let (cookie, _) = keys.session(&alice(), 60).unwrap();
        let (body, tag) = cookie.split_once('.').unwrap();
        let forged = serde_json::json!({"p": "mallory", "g": ["sre"], "via": "static_token", "h": true, "sid": "x", "exp": u64::MAX});
        let forged_body = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert!(keys.open_session(&format!("{forged_body}.{tag}")).is_none());
        assert!(keys.open_session(body).is_none());
        assert!(keys.open_session(&keys.session(&alice(), 0).unwrap().0).is_none());
    }

    #[test]
    fn a_session_ends_with_its_credential_on_sign_out_and_when_idle() {
        let keys = keys();
        let expired = Caller { expires_at: Some(unix_now() - 1), ..alice() };
        let (cookie, secs) = keys.session(&expired, 3600).unwrap();
        assert_eq!(secs, 0);
        assert!(keys.open_session(&cookie).is_none(), "a session never outlives its JWT");
        let (cookie, _) = keys.session(&alice(), 3600).unwrap();
        let session = keys.open_session(&cookie).unwrap();
        keys.end(&session.sid);
        assert!(keys.open_session(&cookie).is_none(), "signed out on the server");
        let idle = Keys::generate(Duration::ZERO).unwrap();
        let (cookie, _) = idle.session(&alice(), 3600).unwrap();
        assert!(idle.open_session(&cookie).is_none(), "idle past the timeout");
    }

    #[test]
    fn a_login_cookie_is_not_a_session_and_back() {
        let keys = keys();
        let login = keys.login(&Login::start("/approvals".into()).unwrap());
        assert!(keys.open_session(&login).is_none());
        assert!(keys.open_login(&login).is_some());
        assert!(keys.open_login(&keys.session(&alice(), 60).unwrap().0).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let keys = keys();
        let token = keys.csrf("sid-1");
        assert!(keys.csrf_ok("sid-1", &token));
        assert!(!keys.csrf_ok("sid-2", &token));
        assert!(!keys.csrf_ok("sid-1", ""));
        assert!(!keys.csrf_ok("sid-1", "not base64!"));
    }

    #[test]
    fn the_pkce_challenge_is_s256_of_the_verifier() {
        // RFC 7636 appendix B.
        let login = Login {
            state: String::new(),
            nonce: String::new(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            next: String::new(),
            exp: 0,
        };
        assert_eq!(login.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }
}
