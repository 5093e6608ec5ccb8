//! Owns: who a caller is. The stdio principal, static bearer tokens (kept as SHA-256) and
//! OIDC JWTs (RS256/ES256 against the issuer's JWKS), the `Caller` they produce, the
//! `AuthError` a client may see, and the RFC 9728 / RFC 6750 pieces the HTTP layer sends
//! with a 401.
//! Uses: `ring` (hashing, signatures), `reqwest` (JWKS), `serde_json`. Nothing else of ours.
//! Must not: decide what a caller may do (that is `policy/`), log or echo a token, map
//! errors to HTTP statuses (that is `http/`), or read `config.rs` types (the caller maps
//! them onto [`IdentityConfig`]).
//!
//! Accepted JWTs: header `alg` RS256 or ES256 with a `kid` (no `crit`); the key must be in
//! the issuer's JWKS with a matching type (and `alg`, if the JWK names one); `iss` equal to
//! a configured issuer; `aud` (string or array) containing its audience; `exp` required and
//! `nbf` optional, both with [`CLOCK_LEEWAY_SECS`] of skew; `sub` required. The principal
//! is `{issuer}#{sub}`.

pub(crate) mod jwt;
mod oidc;
mod principal;
mod throttle;
mod token;

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde_json::{Value, json};

pub use principal::{
    AuthMethod, Caller, Holder, Person, Principal, PrincipalError, StdioPrincipalError, counts_as, fold_name,
    resolve_stdio_principal, resolve_stdio_principal_with,
};
pub use throttle::ThrottleSettings;

use throttle::Throttle;

use oidc::{CachePolicy, Issuer, OidcVerifier};
use token::{DigestError, StaticTokens, StoredToken};

/// Clock skew, in seconds, tolerated on a JWT's `exp` and `nbf`.
pub const CLOCK_LEEWAY_SECS: i64 = jwt::LEEWAY_SECS;

/// Path of the RFC 9728 protected-resource metadata document.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// One `[[identity.tokens]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenEntry {
    /// The principal this token authenticates as.
    pub name: String,
    /// Hex SHA-256 of the token (e.g. `printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    pub groups: Vec<String>,
    /// `human = true`: only a person holds this token, so it may confirm its own holds out
    /// of band.
    pub holder: Holder,
    /// The person behind this token (`person = "…"`).
    pub person: Option<String>,
}

/// One `[[identity.oidc]]` issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OidcIssuer {
    /// Must equal the tokens' `iss` exactly. `https://`, or `http://` on a loopback host.
    pub issuer: String,
    /// Must appear in the tokens' `aud`.
    pub audience: String,
    /// Claim holding the caller's groups (array of strings); a value starting with `/` is
    /// a JSON pointer into the claims. `None`: no groups.
    pub groups_claim: Option<String>,
    /// Skips discovery when set; otherwise read from
    /// `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    /// `human = true`: bearer JWTs of this issuer are held by people only (an interactive
    /// sign-in on the approver page is human whatever this says).
    pub holder: Holder,
    /// Claim values mapped onto gateway-wide group names (`group_map = { "sre" = "sre" }`).
    /// Any other group of this issuer is `{issuer}#{group}`, so it cannot satisfy a
    /// `group:NAME` meant for another issuer or for static tokens.
    pub group_map: std::collections::BTreeMap<String, String>,
    /// `sub` → person (`people = { "00u1" = "carol" }`).
    pub people: std::collections::BTreeMap<String, String>,
}

/// Everything identity needs, already parsed from `airlock.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `"env:VAR"` or a literal. `None` means `env:USER`, falling back to `stdio` when
    /// `USER` is unset.
    pub stdio_principal: Option<String>,
    /// The person behind the stdio caller (`stdio_person`), so that person's `human`
    /// token or sign-in may confirm the stdio caller's holds out of band.
    pub stdio_person: Option<String>,
    pub tokens: Vec<TokenEntry>,
    pub oidc: Vec<OidcIssuer>,
    /// Minimum time between two JWKS fetches for one issuer (an unknown `kid` triggers a
    /// fetch only if the last one is at least this old). Default 30 s.
    pub jwks_min_refetch: Duration,
    /// Keys older than this are refetched on next use. Default 1 h.
    pub jwks_max_age: Duration,
    /// How many refused credentials a client address may present.
    pub throttle: ThrottleSettings,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            stdio_principal: None,
            stdio_person: None,
            tokens: Vec::new(),
            oidc: Vec::new(),
            jwks_min_refetch: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(3600),
            throttle: ThrottleSettings::default(),
        }
    }
}

/// A problem in the identity configuration, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityConfigError {
    #[error("identity.tokens: name {name:?}: {source}")]
    TokenName {
        name: String,
        source: PrincipalError,
    },
    #[error("identity.tokens: {name:?}: sha256 {problem}")]
    TokenDigest { name: String, problem: String },
    #[error("identity.tokens: {first:?} and {second:?} have the same sha256")]
    DuplicateToken { first: String, second: String },
    #[error("identity.tokens: name {0:?} contains '#', which is reserved for OIDC principals ({{issuer}}#{{sub}})")]
    ReservedName(String),
    #[error("identity.oidc: issuer {issuer:?}: {problem}")]
    Issuer { issuer: String, problem: String },
    #[error("identity.oidc: could not build the HTTP client: {0}")]
    HttpClient(String),
}

/// Why a request was not authenticated. Every message is safe to show the client: none
/// contains the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (another scheme counts as none, RFC 6750 §3.1).
    #[error("authentication required: send Authorization: Bearer <token>")]
    MissingCredentials,
    /// A bearer token was presented and refused.
    #[error("invalid token: {0}")]
    InvalidToken(#[from] TokenProblem),
    /// The token's issuer is trusted, but its keys could not be fetched and none are cached.
    #[error("the token issuer's signing keys are unavailable; try again later")]
    KeysUnavailable,
    /// This client address presented too many refused credentials; nothing it sends is
    /// checked until `retry_after_secs` have passed.
    #[error("too many failed authentication attempts from this address; try again in {retry_after_secs} s")]
    TooManyFailures { retry_after_secs: u64 },
}

impl AuthError {
    /// True when the client sent a bearer token (so the 401 says `invalid_token`).
    pub fn token_presented(&self) -> bool {
        match self {
            Self::MissingCredentials => false,
            Self::InvalidToken(_) | Self::KeysUnavailable | Self::TooManyFailures { .. } => true,
        }
    }
}

/// What was wrong with a presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is not recognised")]
    UnknownToken,
    #[error("the signing algorithm is not accepted (RS256 or ES256 only)")]
    UnsupportedAlgorithm,
    #[error("the token header has no kid")]
    MissingKeyId,
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    #[error("the token was signed with a key its issuer does not publish")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    KeyAlgorithmMismatch,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's audience does not include this resource")]
    WrongAudience,
    #[error("the token has no {0} claim")]
    MissingClaim(&'static str),
    #[error("the token's {0} claim is invalid")]
    InvalidClaim(&'static str),
}

/// Authenticates callers against the configured tokens and issuers.
#[derive(Debug)]
pub struct Authenticator {
    stdio: Result<Principal, StdioPrincipalError>,
    stdio_person: Option<Person>,
    tokens: StaticTokens,
    oidc: Option<OidcVerifier>,
    throttle: Throttle,
}

impl Authenticator {
    /// Checks `config` and builds the authenticator. With OIDC issuers configured this
    /// builds a reqwest client, so the rustls ring provider must already be installed.
    pub fn new(config: IdentityConfig) -> Result<Self, IdentityConfigError> {
        let stdio = match &config.stdio_principal {
            Some(spec) => resolve_stdio_principal(spec),
            None => resolve_stdio_principal("env:USER")
                .or_else(|_| Principal::new("stdio").map_err(StdioPrincipalError::Invalid)),
        };
        // Checked when a stdio session starts (an HTTP-only gateway has no stdio caller).
        let stdio = stdio.and_then(|p| check_stdio_clash(&p, &config.tokens).map(|()| p));
        let stdio_person = config
            .stdio_person
            .map(Person::new)
            .transpose()
            .map_err(|source| IdentityConfigError::TokenName { name: "stdio_person".into(), source })?;
        let tokens = build_tokens(config.tokens)?;
        let oidc = if config.oidc.is_empty() {
            None
        } else {
            let policy = CachePolicy {
                min_refetch: config.jwks_min_refetch,
                max_age: config.jwks_max_age,
            };
            Some(OidcVerifier::new(
                build_issuers(config.oidc)?,
                http_client()?,
                policy,
            ))
        };
        Ok(Self {
            stdio,
            stdio_person,
            tokens,
            oidc,
            throttle: Throttle::new(config.throttle),
        })
    }

    /// True when HTTP callers must authenticate (any token or issuer configured).
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.oidc.is_some()
    }

    /// The caller of a stdio session (no groups). Errors if `stdio_principal` was set to
    /// `env:VAR` and `VAR` is unset.
    pub fn stdio_caller(&self) -> Result<Caller, StdioPrincipalError> {
        let principal = self.stdio.clone()?;
        Ok(Caller { person: self.stdio_person.clone(), ..Caller::new(principal, Vec::new(), AuthMethod::Stdio) })
    }

    /// Authenticates an HTTP request from its `Authorization` header value.
    ///
    /// With identity not configured ([`Self::is_enabled`] false) every request is the
    /// same caller, principal `anonymous` via [`AuthMethod::Anonymous`], whatever it sent.
    /// Otherwise a static token is tried first, then (if the token is a JWT) the issuers.
    pub async fn authenticate(
        &self,
        authorization_header: Option<&str>,
    ) -> Result<Caller, AuthError> {
        if !self.is_enabled() {
            return Ok(Caller::anonymous());
        }
        let token = bearer_token(authorization_header)?;
        if let Some(entry) = self.tokens.find(token) {
            return Ok(Caller {
                person: entry.person.clone(),
                display_name: entry.person.as_ref().map(|p| p.as_str().to_owned()),
                holder: entry.holder,
                ..Caller::new(entry.principal.clone(), entry.groups.clone(), AuthMethod::StaticToken)
            });
        }
        match &self.oidc {
            Some(verifier) if jwt::looks_like_jwt(token) => verifier.authenticate(token).await,
            _ => Err(TokenProblem::UnknownToken.into()),
        }
    }

    /// [`Self::authenticate`] for a request from `client` to `route`, throttled: a refused
    /// credential is logged (rate-limited, without the token) and counted against the
    /// address, and an address over its limit gets [`AuthError::TooManyFailures`] before
    /// anything it sent is checked. Requests without a credential are neither.
    pub async fn authenticate_from(
        &self,
        client: Option<std::net::IpAddr>,
        route: &str,
        authorization_header: Option<&str>,
    ) -> Result<Caller, AuthError> {
        if !self.is_enabled() {
            return Ok(Caller::anonymous());
        }
        if let Err(AuthError::MissingCredentials) = bearer_token(authorization_header) {
            return Err(AuthError::MissingCredentials);
        }
        self.throttle.gate(client)?;
        match self.authenticate(authorization_header).await {
            Err(error @ AuthError::InvalidToken(_)) => Err(self.throttle.failed(client, route, error)),
            other => other,
        }
    }

    /// Verifies the ID token of an OpenID Connect sign-in by `client_id` at `issuer`
    /// (which must be a configured `[[identity.oidc]]` issuer): signature against its
    /// JWKS, `iss`, `exp`/`nbf`, `aud` containing `client_id`, and `nonce`. The caller's
    /// principal and groups are those an access token of that issuer would give.
    pub async fn verify_id_token(
        &self,
        issuer: &str,
        id_token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Caller, AuthError> {
        match &self.oidc {
            Some(verifier) if verifier.issuers().any(|i| i == issuer) && jwt::looks_like_jwt(id_token) => {
                let caller = verifier.verify_id_token(id_token, client_id, nonce).await?;
                // The token names its own issuer; it must be the one the sign-in went to.
                if caller.principal.as_str().strip_prefix(issuer).is_some_and(|rest| rest.starts_with('#')) {
                    Ok(caller)
                } else {
                    Err(TokenProblem::UnknownIssuer.into())
                }
            }
            _ => Err(TokenProblem::UnknownIssuer.into()),
        }
    }

    /// The RFC 9728 protected-resource metadata served at
    /// `{public_url}/.well-known/oauth-protected-resource`.
    pub fn protected_resource_metadata(&self, public_url: &str) -> Value {
        let issuers: Vec<&str> = self.oidc.iter().flat_map(OidcVerifier::issuers).collect();
        json!({
            "resource": public_url.trim_end_matches('/'),
            "authorization_servers": issuers,
            "bearer_methods_supported": ["header"],
            "resource_name": "Airlock",
        })
    }
}

/// The URL of the protected-resource metadata for `public_url`.
pub fn resource_metadata_url(public_url: &str) -> String {
    format!(
        "{}{RESOURCE_METADATA_PATH}",
        public_url.trim_end_matches('/')
    )
}

/// The `WWW-Authenticate` value for a 401 answering `error` (RFC 6750 §3, RFC 9728 §5.1):
/// `resource_metadata` always; `error="invalid_token"` and a description only when a
/// token was presented.
pub fn www_authenticate(public_url: &str, error: &AuthError) -> String {
    let mut value = format!(
        r#"Bearer resource_metadata="{}""#,
        resource_metadata_url(public_url)
    );
    if error.token_presented() {
        // Our messages never contain `"` or `\`, so they are valid quoted-strings as is.
        value.push_str(&format!(
            r#", error="invalid_token", error_description="{error}""#
        ));
    }
    value
}

/// Extracts the token from `Bearer <token>` (scheme case-insensitive, RFC 7235 §2.1).
fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::MissingCredentials)?.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingCredentials);
    }
    let token = rest.trim();
    if token.is_empty() || token.len() > jwt::MAX_TOKEN_LEN || token.contains(char::is_whitespace) {
        return Err(TokenProblem::Malformed.into());
    }
    Ok(token)
}

fn build_tokens(entries: Vec<TokenEntry>) -> Result<StaticTokens, IdentityConfigError> {
    let mut stored: Vec<StoredToken> = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.name.contains('#') {
            return Err(IdentityConfigError::ReservedName(entry.name));
        }
        let principal = Principal::new(entry.name.clone()).map_err(|source| {
            IdentityConfigError::TokenName {
                name: entry.name.clone(),
                source,
            }
        })?;
        let digest = token::parse_digest(&entry.sha256).map_err(|e| {
            let problem = match e {
                DigestError::NotHex => "is not hex".to_owned(),
                DigestError::WrongLength(n) => format!("must be 32 bytes (64 hex digits), not {n}"),
            };
            IdentityConfigError::TokenDigest {
                name: entry.name.clone(),
                problem,
            }
        })?;
        if let Some(first) = stored.iter().find(|s| s.digest == digest) {
            return Err(IdentityConfigError::DuplicateToken {
                first: first.principal.to_string(),
                second: entry.name,
            });
        }
        let person = entry
            .person
            .map(Person::new)
            .transpose()
            .map_err(|source| IdentityConfigError::TokenName { name: entry.name.clone(), source })?;
        stored.push(StoredToken {
            digest,
            principal,
            groups: entry.groups,
            holder: entry.holder,
            person,
        });
    }
    Ok(StaticTokens::new(stored))
}

fn build_issuers(configs: Vec<OidcIssuer>) -> Result<Vec<Issuer>, IdentityConfigError> {
    let mut issuers: Vec<Issuer> = Vec::with_capacity(configs.len());
    for c in configs {
        let bad = |problem: &str| IdentityConfigError::Issuer {
            issuer: c.issuer.clone(),
            problem: problem.to_owned(),
        };
        check_fetch_url(&c.issuer).map_err(bad)?;
        if let Some(uri) = &c.jwks_uri {
            check_fetch_url(uri).map_err(|p| bad(&format!("jwks_uri: {p}")))?;
        }
        if c.audience.is_empty() {
            return Err(bad("audience must not be empty"));
        }
        if issuers.iter().any(|i| i.issuer == c.issuer) {
            return Err(bad("is configured twice"));
        }
        let groups_claim = c.groups_claim.filter(|g| !g.is_empty());
        let mut people = std::collections::BTreeMap::new();
        for (sub, person) in c.people {
            let person = Person::new(person).map_err(|e| bad(&format!("people.{sub}: {e}")))?;
            people.insert(sub, person);
        }
        let claims = oidc::IssuerClaims { groups_claim, group_map: c.group_map, people, holder: c.holder };
        issuers.push(Issuer::new(c.issuer, c.audience, claims, c.jwks_uri));
    }
    Ok(issuers)
}

/// The stdio principal is a source of its own: it must not be (or look like) a token's
/// name, or one credential's holds could be decided by the other. Only known at start
/// when it comes from `env:USER`, so it is checked here as well as by `airlock check`.
fn check_stdio_clash(stdio: &Principal, tokens: &[TokenEntry]) -> Result<(), StdioPrincipalError> {
    let folded = fold_name(stdio.as_str());
    if stdio.as_str().contains('#') {
        return Err(StdioPrincipalError::Clash(format!(
            "{:?} contains '#', which only OIDC principals ({{issuer}}#{{sub}}) have",
            stdio.as_str()
        )));
    }
    match tokens.iter().find(|t| fold_name(&t.name) == folded) {
        Some(t) => Err(StdioPrincipalError::Clash(format!(
            "{:?} collides with the [[identity.tokens]] name {:?}; rename one (identity.stdio_principal, \
             or the token), and link them with `stdio_person` and `person` if they are one human",
            stdio.as_str(),
            t.name
        ))),
        None => Ok(()),
    }
}

/// Keys are only fetched over https, except from a loopback host (local IdPs and tests).
pub(crate) fn check_fetch_url(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "is not a URL")?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment");
    }
    let host = parsed.host_str().ok_or("has no host")?;
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>();
    let loopback = host == "localhost" || ip.is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be https:// (http:// only on a loopback host)"),
    }
}

fn http_client() -> Result<reqwest::Client, IdentityConfigError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| IdentityConfigError::HttpClient(e.to_string()))
}
