//! Owns: per-issuer JWKS discovery, fetching and the `kid → key` cache, and turning a
//! verified JWT into a `Caller`.
//! Uses: `reqwest` (rustls; the process installs ring as the provider), `identity::jwt`.
//! Must not: accept a key that did not come from the configured issuer's JWKS, or refetch
//! more often than the configured interval however many unknown `kid`s arrive.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::jwt::{self, ClaimRules, VerifyingKey};
use super::principal::{AuthMethod, Caller, Holder, Person, Principal};
use super::{AuthError, TokenProblem, check_fetch_url};

/// Largest discovery or JWKS document accepted.
const MAX_DOC_BYTES: usize = 1024 * 1024;

/// One configured issuer, checked.
#[derive(Debug)]
pub(crate) struct Issuer {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) claims: IssuerClaims,
    /// `None` until discovered (or set from config).
    jwks_uri: RwLock<Option<String>>,
    cache: RwLock<KeyCache>,
    /// Serializes fetches so a burst of unknown `kid`s causes one request.
    fetch_lock: tokio::sync::Mutex<()>,
}

/// How an issuer's claims become a caller: groups, people, and whether its bearer tokens
/// are held by people only.
#[derive(Debug, Default)]
pub(crate) struct IssuerClaims {
    pub(crate) groups_claim: Option<String>,
    /// Claim value → gateway-wide group; any other group is `{issuer}#{group}`.
    pub(crate) group_map: std::collections::BTreeMap<String, String>,
    /// `sub` → person.
    pub(crate) people: std::collections::BTreeMap<String, Person>,
    pub(crate) holder: Holder,
}

impl IssuerClaims {
    /// The groups a caller of `issuer` has: mapped ones by their gateway name, the rest
    /// qualified by the issuer, so two issuers' `sre` are two different groups.
    fn groups(&self, issuer: &str, claimed: Vec<String>) -> Vec<String> {
        claimed
            .into_iter()
            .map(|g| match self.group_map.get(&g) {
                Some(mapped) => mapped.clone(),
                None => format!("{issuer}#{g}"),
            })
            .collect()
    }
}

/// A `kid` → keys cache. A JWKS may publish several keys under one `kid` (during a
/// rotation, say); each is tried.
#[derive(Debug, Default)]
struct KeyCache {
    keys: HashMap<String, Arc<[VerifyingKey]>>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch was last attempted, successful or not (for rate limiting).
    attempted_at: Option<Instant>,
}

impl Issuer {
    pub(crate) fn new(
        issuer: String,
        audience: String,
        claims: IssuerClaims,
        jwks_uri: Option<String>,
    ) -> Self {
        Self {
            issuer,
            audience,
            claims,
            jwks_uri: RwLock::new(jwks_uri),
            cache: RwLock::new(KeyCache::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }
}

/// Timing knobs for the key cache.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CachePolicy {
    /// Minimum time between two fetches of one issuer's JWKS.
    pub(crate) min_refetch: Duration,
    /// Cached keys older than this are refreshed on next use (stale keys are kept if the
    /// refresh fails, so an IdP outage does not lock everyone out at once).
    pub(crate) max_age: Duration,
}

/// Verifies JWTs from the configured issuers.
#[derive(Debug)]
pub(crate) struct OidcVerifier {
    issuers: Vec<Issuer>,
    client: reqwest::Client,
    policy: CachePolicy,
}

/// Why an issuer's keys could not be fetched (logged, not shown to clients).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("GET {url}: status {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("GET {url}: {what}")]
    Document { url: String, what: &'static str },
}

impl OidcVerifier {
    pub(crate) fn new(issuers: Vec<Issuer>, client: reqwest::Client, policy: CachePolicy) -> Self {
        Self {
            issuers,
            client,
            policy,
        }
    }

    pub(crate) fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|i| i.issuer.as_str())
    }

    /// Verifies `token` and returns the caller it identifies.
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.verify(token, None).await.map(|(caller, _)| caller)
    }

    /// The issuer's settings for `issuer`, if configured.
    fn issuer(&self, issuer: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.issuer == issuer)
    }

    /// Verifies an OpenID Connect ID token from a sign-in (Core §3.1.3.7): the same
    /// signature, issuer and time checks as an access token, but the audience is the
    /// relying party's `client_id`, `azp` (when present) must be it too, and `nonce` must
    /// be the one this sign-in sent, so a token minted for another sign-in is refused.
    pub(crate) async fn verify_id_token(&self, token: &str, client_id: &str, nonce: &str) -> Result<Caller, AuthError> {
        let (mut caller, claims) = self.verify(token, Some(client_id)).await?;
        // A person signed in at the identity provider, just now, in a browser.
        caller.via = AuthMethod::OidcSignIn;
        caller.holder = Holder::Human;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(TokenProblem::InvalidClaim("nonce").into());
        }
        if claims.get("azp").is_some_and(|azp| azp.as_str() != Some(client_id)) {
            return Err(TokenProblem::InvalidClaim("azp").into());
        }
        Ok(caller)
    }

    async fn verify(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<(Caller, serde_json::Map<String, Value>), AuthError> {
        let jwt = jwt::parse(token)?;
        let claimed = jwt.claimed_issuer().ok_or(TokenProblem::UnknownIssuer)?;
        let issuer = self.issuer(claimed).ok_or(TokenProblem::UnknownIssuer)?;
        let keys = self.key(issuer, &jwt.kid).await?;
        // Every key published under the kid is tried; the first that verifies wins. The
        // error is the one of the last key, so a lone key reports exactly as before.
        let mut verified = Err(TokenProblem::UnknownKey);
        for key in keys.iter() {
            verified = jwt.verify(key);
            if verified.is_ok() {
                break;
            }
        }
        verified?;
        let rules = ClaimRules {
            issuer: &issuer.issuer,
            audience: audience.unwrap_or(&issuer.audience),
            groups_claim: issuer.claims.groups_claim.as_deref(),
        };
        let identity = jwt::check_claims(&jwt.claims, &rules, unix_now())?;
        let principal = Principal::new(format!("{}#{}", issuer.issuer, identity.subject))
            .map_err(|_| TokenProblem::InvalidClaim("sub"))?;
        let caller = Caller {
            person: issuer.claims.people.get(&identity.subject).cloned(),
            holder: issuer.claims.holder,
            expires_at: u64::try_from(identity.expires_at).ok(),
            display_name: display_name(&jwt.claims),
            ..Caller::new(principal, issuer.claims.groups(&issuer.issuer, identity.groups), AuthMethod::Oidc)
        };
        Ok((caller, jwt.claims))
    }

    /// The key for `kid`, fetching the JWKS when the cache is empty, stale, or lacks
    /// `kid` (rate-limited by `min_refetch`).
    async fn key(&self, issuer: &Issuer, kid: &str) -> Result<Arc<[VerifyingKey]>, AuthError> {
        if let Some(key) = self.cached(issuer, kid) {
            return Ok(key);
        }
        let _guard = issuer.fetch_lock.lock().await;
        // Another task may have fetched while we waited.
        if let Some(key) = self.cached(issuer, kid) {
            return Ok(key);
        }
        let may_fetch = {
            let cache = read(&issuer.cache);
            cache
                .attempted_at
                .is_none_or(|t| t.elapsed() >= self.policy.min_refetch)
        };
        if may_fetch {
            let result = self.fetch_keys(issuer).await;
            let mut cache = write(&issuer.cache);
            cache.attempted_at = Some(Instant::now());
            match result {
                Ok(keys) => {
                    cache.keys = keys;
                    cache.fetched_at = Some(Instant::now());
                }
                Err(e) => tracing::warn!(issuer = %issuer.issuer, error = %e, "JWKS fetch failed"),
            }
        }
        let cache = read(&issuer.cache);
        match (cache.keys.get(kid), cache.fetched_at) {
            (Some(key), _) => Ok(Arc::clone(key)),
            (None, Some(_)) => Err(TokenProblem::UnknownKey.into()),
            (None, None) => Err(AuthError::KeysUnavailable),
        }
    }

    /// A cached key, unless the cache is older than `max_age`.
    fn cached(&self, issuer: &Issuer, kid: &str) -> Option<Arc<[VerifyingKey]>> {
        let cache = read(&issuer.cache);
        let fresh = cache
            .fetched_at
            .is_some_and(|t| t.elapsed() < self.policy.max_age);
        if !fresh {
            return None;
        }
        cache.keys.get(kid).cloned()
    }

    async fn fetch_keys(
        &self,
        issuer: &Issuer,
    ) -> Result<HashMap<String, Arc<[VerifyingKey]>>, FetchError> {
        let known = read(&issuer.jwks_uri).clone();
        let jwks_uri = match known {
            Some(uri) => uri,
            None => {
                let uri = self.discover(issuer).await?;
                *write(&issuer.jwks_uri) = Some(uri.clone());
                uri
            }
        };
        let doc = self.get_json(&jwks_uri).await?;
        let keys = jwt::parse_jwks(&doc).ok_or(FetchError::Document {
            url: jwks_uri.clone(),
            what: "not a JWKS (no `keys` array)",
        })?;
        tracing::debug!(issuer = %issuer.issuer, keys = keys.len(), "fetched JWKS");
        Ok(keys.into_iter().map(|(k, v)| (k, Arc::from(v))).collect())
    }

    /// Reads `jwks_uri` from the issuer's discovery document, whose `issuer` must equal
    /// the configured one exactly (OpenID Connect Discovery §4.3).
    async fn discover(&self, issuer: &Issuer) -> Result<String, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url).await?;
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
            return Err(FetchError::Document {
                url,
                what: "`issuer` differs from the configured issuer",
            });
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or(FetchError::Document {
                url: url.clone(),
                what: "no `jwks_uri`",
            })?;
        // The same transport rule as for configured URLs: https, or http on loopback.
        check_fetch_url(jwks_uri).map_err(|what| FetchError::Document { url, what })?;
        Ok(jwks_uri.to_owned())
    }

    async fn get_json(&self, url: &str) -> Result<Value, FetchError> {
        let http = |source| FetchError::Http {
            url: url.to_owned(),
            source,
        };
        let mut response = self.client.get(url).send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_DOC_BYTES {
                return Err(FetchError::Document {
                    url: url.to_owned(),
                    what: "document too large",
                });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|_| FetchError::Document {
            url: url.to_owned(),
            what: "not JSON",
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

// A poisoned lock only means another thread panicked mid-update of a cache; the data is
// still a valid (if possibly stale) cache, so keep serving it.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Longest display name kept, in characters: a page header is no place for an essay.
const DISPLAY_NAME_MAX: usize = 80;

/// The `name` claim, else `email`: what a page calls the person (escaped where shown).
fn display_name(claims: &serde_json::Map<String, Value>) -> Option<String> {
    ["name", "email"]
        .iter()
        .filter_map(|claim| claims.get(*claim).and_then(Value::as_str))
        .map(|text| text.chars().filter(|c| !c.is_control()).take(DISPLAY_NAME_MAX).collect::<String>())
        .find(|text| !text.trim().is_empty())
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn the_name_claim_wins_over_email_and_blank_names_do_not_count() {
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(display_name(&claims(serde_json::json!({"name": "Dana Scully", "email": "d@x"}))).as_deref(), Some("Dana Scully"));
        assert_eq!(display_name(&claims(serde_json::json!({"name": "  ", "email": "d@x"}))).as_deref(), Some("d@x"));
        assert_eq!(display_name(&claims(serde_json::json!({"name": 7}))), None);
        let long = "x".repeat(200);
        assert_eq!(display_name(&claims(serde_json::json!({"name": long}))).map(|n| n.chars().count()), Some(DISPLAY_NAME_MAX));
    }
}
