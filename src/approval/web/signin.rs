//! The OpenID Connect relying party of the approver page: authorization code flow with
//! PKCE (S256), against one configured issuer.
//!
//! Owns: discovery of the issuer's endpoints, the authorization URL, the code exchange.
//! Uses: `reqwest`, `identity` (the ID token is verified by `Authenticator`, with the
//! issuer's JWKS, never here).
//! Must not: trust anything in the token response before `Authenticator::verify_id_token`
//! has checked it.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use url::Url;

use super::session::Login;
use crate::identity::check_fetch_url;

/// Largest discovery or token response accepted.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why a sign-in through the issuer failed. Shown to the person signing in: none of these
/// carry a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    #[error("the identity provider's discovery document at {url} is unusable: {what}")]
    Discovery { url: String, what: String },
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the code exchange with the identity provider failed: {0}")]
    Exchange(String),
    #[error("this sign-in expired or was started in another browser; start again")]
    BadState,
}

/// The issuer's endpoints, from its discovery document.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: Url,
    token: String,
}

/// What the page needs to know about its OIDC client registration.
#[derive(Debug, Clone)]
pub struct OidcClientSettings {
    /// Exactly as in `[[identity.oidc]] issuer`.
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client; PKCE alone protects the code.
    pub client_secret: Option<String>,
}

/// The relying party.
pub(super) struct OidcClient {
    settings: OidcClientSettings,
    redirect_uri: String,
    http: reqwest::Client,
    endpoints: tokio::sync::OnceCell<Endpoints>,
}

impl OidcClient {
    pub(super) fn new(settings: OidcClientSettings, redirect_uri: String) -> Result<OidcClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            // A token endpoint that redirects is not followed with a code and a secret.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(OidcClient { settings, redirect_uri, http, endpoints: tokio::sync::OnceCell::new() })
    }

    pub(super) fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    pub(super) fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    /// Where to send the browser to sign in.
    pub(super) async fn authorize_url(&self, login: &Login) -> Result<String, SignInError> {
        let endpoints = self.endpoints().await?;
        let mut url = endpoints.authorization.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            // `profile email`: the `name` / `email` claims the page greets the person with.
            .append_pair("scope", "openid profile email")
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &login.challenge())
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchanges an authorization code for the (still unverified) ID token.
    pub(super) async fn exchange(&self, code: &str, login: &Login) -> Result<String, SignInError> {
        let endpoints = self.endpoints().await?;
        // Built in a block: the serializer is not `Send` and must not live across an await.
        let (body, basic) = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("code_verifier", &login.verifier);
            let basic = match &self.settings.client_secret {
                // client_secret_basic (RFC 6749 §2.3.1: both parts form-encoded first).
                Some(secret) => {
                    let pair = format!("{}:{}", form_encode(&self.settings.client_id), form_encode(secret));
                    Some(format!("Basic {}", STANDARD.encode(pair)))
                }
                None => {
                    form.append_pair("client_id", &self.settings.client_id);
                    None
                }
            };
            (form.finish(), basic)
        };
        let mut request = self.http.post(&endpoints.token).header("content-type", "application/x-www-form-urlencoded");
        if let Some(basic) = basic {
            request = request.header("authorization", basic);
        }
        let response = request.body(body).send().await.map_err(|e| SignInError::Exchange(e.to_string()))?;
        let status = response.status();
        let body = read_json(response).await.map_err(SignInError::Exchange)?;
        if !status.is_success() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("no error code");
            return Err(SignInError::Exchange(format!("status {status}: {}", truncate(error))));
        }
        body.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| SignInError::Exchange("the response has no id_token".into()))
    }

    async fn endpoints(&self) -> Result<&Endpoints, SignInError> {
        self.endpoints.get_or_try_init(|| self.discover()).await
    }

    /// Reads the discovery document; its `issuer` must be ours exactly (Discovery §4.3).
    async fn discover(&self) -> Result<Endpoints, SignInError> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let bad = |what: String| SignInError::Discovery { url: url.clone(), what };
        let response = self.http.get(&url).send().await.map_err(|e| bad(e.to_string()))?;
        if !response.status().is_success() {
            return Err(bad(format!("status {}", response.status())));
        }
        let doc = read_json(response).await.map_err(bad)?;
        if doc.get("issuer").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err(bad("its issuer differs from the configured one".into()));
        }
        let text = |key: &str| doc.get(key).and_then(Value::as_str).map(str::to_owned);
        let authorization = text("authorization_endpoint")
            .and_then(|u| Url::parse(&u).ok())
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| bad("no usable authorization_endpoint".into()))?;
        let token = text("token_endpoint").ok_or_else(|| bad("no token_endpoint".into()))?;
        // The code (and a secret) go there: the same transport rule as for keys.
        check_fetch_url(&token).map_err(|why| bad(format!("token_endpoint {why}")))?;
        Ok(Endpoints { authorization, token })
    }
}

fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A short, printable excerpt of a peer's error code.
fn truncate(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(100).collect()
}

async fn read_json(mut response: reqwest::Response) -> Result<Value, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("response too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| "response is not JSON".to_string())
}
