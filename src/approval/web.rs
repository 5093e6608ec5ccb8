//! The approver web page (DESIGN.md §5, channel `web`): `/approvals` lists the pending
//! holds the signed-in person may decide, `/approvals/{id}` shows one with Approve / Deny,
//! and `POST /approvals/{id}/decision` records the decision through the broker.
//!
//! Owns: the `/approvals` routes, sign-in (OpenID Connect code flow with PKCE, or a bearer
//! token), the signed session cookie and the CSRF check.
//! Uses: `approval::Broker` (read, decide, events), `identity::Authenticator` (bearer tokens
//! and ID tokens are verified there, never here).
//! Must not: change anything on a GET (chat link scanners and previewers follow links), or
//! let a decision through without the CSRF token of the session that makes it; decide for
//! an anonymous caller.
//!
//! Who may see an approval's details: those who may decide it, and its own caller (without
//! buttons). Everyone else gets a 403 that shows nothing of the call.

mod page;
mod session;
mod signin;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::identity::{AuthError, AuthMethod, Authenticator, Caller};

use super::api::{ClientAddr, retry_after};
use super::{Approval, ApprovalId, Broker, DecideError, NotEligible, State, Verdict};
use page::{Detail, Header};
use session::{Keys, LOGIN_COOKIE, Login, SESSION_COOKIE, Session};
use signin::{OidcClient, SignInError};

pub use session::RandomError;
pub use signin::OidcClientSettings;

/// The channel name decisions from this page are recorded with.
pub const CHANNEL: &str = "web";

/// How long `GET /approvals/{id}/state?known=…` waits for a change before answering.
const LONG_POLL: Duration = Duration::from_secs(25);

/// How the page is set up.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The gateway's public base URL (no trailing `/`): the OIDC redirect URI is under it,
    /// and cookies are `Secure` when it is https.
    pub public_url: String,
    /// `None`: only bearer tokens sign in.
    pub oidc: Option<OidcClientSettings>,
    /// How long a sign-in lasts (never past the credential's own expiry).
    pub session_lifetime: Duration,
    /// A sign-in unused this long ends.
    pub idle_timeout: Duration,
}

/// Why the page could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("approvals.web: {0}")]
    Random(#[from] RandomError),
    #[error("approvals.web: could not build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The page's state. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    auth: Arc<Authenticator>,
    keys: Keys,
    oidc: Option<OidcClient>,
    secure: bool,
    session_secs: u64,
}

/// Someone signed in (by cookie or `Authorization` header) and the id their CSRF token
/// is bound to.
struct Viewer {
    caller: Caller,
    sid: String,
}

impl Web {
    /// Sets up the page. The session key is made here: a restart signs everyone out.
    pub fn new(broker: Broker, auth: Arc<Authenticator>, settings: WebSettings) -> Result<Web, WebError> {
        let redirect_uri = format!("{}/approvals/oidc/callback", settings.public_url);
        let oidc = settings.oidc.map(|s| OidcClient::new(s, redirect_uri)).transpose()?;
        Ok(Web {
            inner: Arc::new(Inner {
                broker,
                auth,
                keys: Keys::generate(settings.idle_timeout)?,
                oidc,
                secure: settings.public_url.starts_with("https://"),
                session_secs: settings.session_lifetime.as_secs().max(1),
            }),
        })
    }

    /// The `/approvals` routes. Mount them behind the Host/Origin guard.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/approvals", get(list))
            .route("/approvals/sign-in", get(sign_in_page).post(sign_in_with_token))
            .route("/approvals/sign-in/oidc", get(oidc_start))
            .route("/approvals/oidc/callback", get(oidc_callback))
            .route("/approvals/sign-out", post(sign_out))
            .route("/approvals/{id}", get(detail))
            .route("/approvals/{id}/state", get(state))
            .route("/approvals/{id}/decision", post(decision).get(decision_by_get))
            .with_state(self.clone())
    }

    /// Who is asking: an `Authorization: Bearer` header wins over the session cookie.
    /// With identity not configured nobody is ever signed in.
    async fn viewer(&self, client: ClientAddr, headers: &HeaderMap) -> Result<Option<Viewer>, AuthError> {
        if !self.inner.auth.is_enabled() {
            return Ok(None);
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let text = value.to_str().ok();
            let caller = self.inner.auth.authenticate_from(client.0, "/approvals", text).await?;
            // A scripted caller has no session: its CSRF token is bound to its credential.
            let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
            return Ok(Some(Viewer { caller, sid: format!("bearer:{}", hex::encode(digest)) }));
        }
        Ok(cookies(headers, SESSION_COOKIE)
            .find_map(|c| self.inner.keys.open_session(c))
            .map(|Session { caller, sid }| Viewer { caller, sid }))
    }

    /// Who is signed in, for a page served beside this one (the audit view): the same
    /// sessions and rules. `Err` is the response to send instead: the sign-in page (401,
    /// then back to `next`), or the refusal of a bad credential.
    // The error is the page to send, built once per refused request.
    #[allow(clippy::result_large_err)]
    pub async fn signed_in_caller(&self, client: ClientAddr, headers: &HeaderMap, next: &str) -> Result<Caller, Response> {
        signed_in(self, client, headers, next).await.map(|viewer| viewer.caller)
    }

    fn oidc_issuer(&self) -> Option<&str> {
        self.inner.oidc.as_ref().map(OidcClient::issuer)
    }

    /// A cookie header value; `value = None` clears it.
    fn cookie(&self, name: &str, value: Option<&str>, path: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.inner.secure { "; Secure" } else { "" };
        let (value, max_age) = value.map_or(("", 0), |v| (v, max_age));
        HeaderValue::from_str(&format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax{secure}; Max-Age={max_age}")).ok()
    }
}

/// Whether `caller` may decide `a` on this page, and if not, why (in words for them).
fn eligibility(a: &Approval, caller: &Caller) -> Result<(), String> {
    if caller.via == AuthMethod::Anonymous {
        return Err(NotEligible::Anonymous.to_string());
    }
    a.may_decide(caller, CHANNEL).map_err(|e| e.to_string())?;
    // Teams cards link here, so a rule that asks for Teams is decided on this page.
    if !(a.announces_on(CHANNEL) || a.announces_on("teams")) {
        return Err(format!("this approval is decided on {} only", a.channels.join(", ")));
    }
    Ok(())
}

/// Whether `caller` may see `a` at all: its deciders and its own caller.
fn may_view(a: &Approval, caller: &Caller) -> bool {
    caller.via != AuthMethod::Anonymous && a.may_view(caller)
}

// ---- handlers ---------------------------------------------------------------------------

/// `GET /approvals`.
async fn list(AxumState(web): AxumState<Web>, client: ClientAddr, headers: HeaderMap) -> Response {
    let viewer = match signed_in(&web, client, &headers, "/approvals").await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let mine: Vec<Approval> = web
        .inner
        .broker
        .list(Some(State::Pending))
        .into_iter()
        .filter(|a| eligibility(a, &viewer.caller).is_ok())
        .collect();
    html(StatusCode::OK, "Approvals", Some(&viewer), |_| page::list(&mine))
}

/// `GET /approvals/{id}`.
async fn detail(AxumState(web): AxumState<Web>, client: ClientAddr, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let next = format!("/approvals/{}", ApprovalId::parse(&id).map(|i| i.to_string()).unwrap_or_default());
    let viewer = match signed_in(&web, client, &headers, &next).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let approval = match visible(&web, &id, &viewer) {
        Ok(approval) => approval,
        Err(response) => return response,
    };
    show(&web, &approval, &viewer, StatusCode::OK, None)
}

/// Renders one approval for `viewer`, with buttons if they may decide it.
fn show(web: &Web, a: &Approval, viewer: &Viewer, status: StatusCode, note: Option<(&str, &str)>) -> Response {
    let csrf = web.inner.keys.csrf(&viewer.sid);
    let why_not = eligibility(a, &viewer.caller).err();
    let note = note.or_else(|| why_not.as_deref().filter(|_| a.is_pending()).map(|w| ("", w)));
    html(status, &a.tool, Some(viewer), |nonce| {
        page::detail(a, &Detail { csrf: why_not.is_none().then_some(csrf.as_str()), note, nonce })
    })
}

/// `GET /approvals/{id}/state[?known=STATE.VOTES]`: the state as JSON. With `known`
/// equal to the current state, waits (up to [`LONG_POLL`]) for it to change.
async fn state(
    AxumState(web): AxumState<Web>,
    client: ClientAddr,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let viewer = match web.viewer(client, &headers).await {
        Ok(Some(viewer)) => viewer,
        Ok(None) => return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "sign in first"}))).into_response(),
        Err(error) => {
            let mut response = (auth_status(&error), axum::Json(json!({"error": error.to_string()}))).into_response();
            retry_after(&mut response, &error);
            return response;
        }
    };
    let Some(mut approval) = ApprovalId::parse(&id).and_then(|id| web.inner.broker.get(&id)).filter(|a| may_view(a, &viewer.caller))
    else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"error": "no such approval"}))).into_response();
    };
    if let Some(known) = param(query.as_deref(), "known") {
        // Subscribe before re-reading, so a change in between is not missed.
        let mut events = web.inner.broker.subscribe();
        let wait = async {
            loop {
                let current = web.inner.broker.get(&approval.id);
                if current.as_ref().is_none_or(|a| page::known(a) != known) {
                    return current;
                }
                // Any event, or missed ones (`Lagged`), means: re-read and compare.
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                    return None;
                }
            }
        };
        if let Ok(Some(current)) = tokio::time::timeout(LONG_POLL, wait).await {
            approval = current;
        }
    }
    let body = json!({
        "id": approval.id,
        "state": approval.state.as_str(),
        "known": page::known(&approval),
        "approvals": approval.approvals(),
        "quorum": approval.quorum,
    });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /approvals/{id}/decision` with a form `decision`, `comment`, `csrf`.
async fn decision(
    AxumState(web): AxumState<Web>,
    client: ClientAddr,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let viewer = match signed_in(&web, client, &headers, "/approvals").await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let form = Form::parse(&body);
    // First, before anything is read or decided: the form must come from this session's page.
    if !form.csrf.as_deref().is_some_and(|token| web.inner.keys.csrf_ok(&viewer.sid, token)) {
        tracing::warn!(principal = %viewer.caller.principal, "approval decision without a valid CSRF token refused");
        return message(
            StatusCode::FORBIDDEN,
            "Not decided",
            Some(&viewer),
            "This form did not come from your Airlock page (its CSRF token is missing or wrong). Reload the approval and try again.",
        );
    }
    let approval = match visible(&web, &id, &viewer) {
        Ok(approval) => approval,
        Err(response) => return response,
    };
    let verdict = match form.decision.as_deref() {
        Some("approve") => Verdict::Approve,
        Some("deny") => Verdict::Deny,
        _ => return show(&web, &approval, &viewer, StatusCode::BAD_REQUEST, Some(("error", "Choose Approve or Deny."))),
    };
    if let Err(why) = eligibility(&approval, &viewer.caller) {
        return show(&web, &approval, &viewer, StatusCode::FORBIDDEN, Some(("error", &why)));
    }
    match web.inner.broker.decide(&approval.id, &viewer.caller, verdict, form.comment, CHANNEL).await {
        // Post/Redirect/Get: a reload does not resubmit the form.
        Ok(_) => see_other(&format!("/approvals/{}", approval.id)),
        Err(error) => {
            let (status, current) = decide_error_status(&error);
            tracing::info!(%error, approval = %approval.id, "web decision not taken");
            let current = current.unwrap_or(approval);
            show(&web, &current, &viewer, status, Some(("error", &error.to_string())))
        }
    }
}

/// `GET /approvals/{id}/decision`: never decides (link scanners and previews fetch URLs);
/// 405 with a page that points at the approval.
async fn decision_by_get(Path(id): Path<String>) -> Response {
    let id = ApprovalId::parse(&id).map(|i| i.to_string()).unwrap_or_default();
    let mut response = html(StatusCode::METHOD_NOT_ALLOWED, "Nothing decided", None, |_| {
        format!(
            "<h1>Nothing was decided</h1>{}<p><a class=\"button primary\" href=\"/approvals/{}\">Open the approval</a></p>",
            page::note("", "Approvals are decided only with the buttons on the approval page, never by opening a link."),
            page::esc(&id),
        )
    });
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// The one mapping of a refused decision to an HTTP status (and the approval to show).
fn decide_error_status(error: &DecideError) -> (StatusCode, Option<Approval>) {
    match error {
        DecideError::NotFound(_) => (StatusCode::NOT_FOUND, None),
        DecideError::NotEligible(_) => (StatusCode::FORBIDDEN, None),
        DecideError::Expired(a) | DecideError::Settled(a) => (StatusCode::CONFLICT, Some((**a).clone())),
        DecideError::Broker(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
    }
}

/// `GET /approvals/sign-in[?next=PATH]`.
async fn sign_in_page(AxumState(web): AxumState<Web>, RawQuery(query): RawQuery) -> Response {
    let next = local_next(param(query.as_deref(), "next").as_deref());
    sign_in_response(&web, StatusCode::OK, &next, None)
}

fn sign_in_response(web: &Web, status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let enabled = web.inner.auth.is_enabled();
    html(status, "Sign in", None, |_| page::sign_in(next, web.oidc_issuer(), enabled, error))
}

/// `POST /approvals/sign-in` with a form `token`, `next`: a static token (or an access
/// token of a configured issuer) becomes a session.
async fn sign_in_with_token(AxumState(web): AxumState<Web>, client: ClientAddr, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let next = local_next(form.next.as_deref());
    if !web.inner.auth.is_enabled() {
        return sign_in_response(&web, StatusCode::FORBIDDEN, &next, None);
    }
    let token = form.token.unwrap_or_default();
    let bearer = format!("Bearer {}", token.trim());
    let caller = match web.inner.auth.authenticate_from(client.0, "/approvals/sign-in", Some(&bearer)).await {
        Ok(caller) => caller,
        Err(error) => {
            let mut response = sign_in_response(&web, auth_status(&error), &next, Some(&error.to_string()));
            retry_after(&mut response, &error);
            return response;
        }
    };
    start_session(&web, &caller, &next, false)
}

/// `GET /approvals/sign-in/oidc[?next=PATH]`: off to the issuer, with state, nonce and a
/// PKCE challenge; their secrets travel in a signed, short-lived cookie.
async fn oidc_start(AxumState(web): AxumState<Web>, RawQuery(query): RawQuery) -> Response {
    let next = local_next(param(query.as_deref(), "next").as_deref());
    let Some(oidc) = &web.inner.oidc else {
        return sign_in_response(&web, StatusCode::NOT_FOUND, &next, Some("single sign-on is not configured"));
    };
    let login = match Login::start(next.clone()) {
        Ok(login) => login,
        Err(error) => return sign_in_response(&web, StatusCode::INTERNAL_SERVER_ERROR, &next, Some(&error.to_string())),
    };
    let url = match oidc.authorize_url(&login).await {
        Ok(url) => url,
        Err(error) => {
            tracing::warn!(%error, "OIDC sign-in could not start");
            return sign_in_response(&web, StatusCode::BAD_GATEWAY, &next, Some(&error.to_string()));
        }
    };
    let mut response = see_other(&url);
    let cookie = web.inner.keys.login(&login);
    if let Some(value) = web.cookie(LOGIN_COOKIE, Some(&cookie), "/approvals/oidc", session::LOGIN_LIFETIME_SECS) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `GET /approvals/oidc/callback?code&state`: the issuer sends the browser back here.
async fn oidc_callback(AxumState(web): AxumState<Web>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let query = query.as_deref();
    let Some(oidc) = &web.inner.oidc else {
        return sign_in_response(&web, StatusCode::NOT_FOUND, "/approvals", Some("single sign-on is not configured"));
    };
    let login = cookies(&headers, LOGIN_COOKIE).find_map(|c| web.inner.keys.open_login(c));
    // The state is random per sign-in and bound to this browser's signed cookie: a
    // callback from someone else's sign-in (login CSRF) does not match.
    let Some(login) = login.filter(|l| param(query, "state").is_some_and(|s| s == l.state)) else {
        return sign_in_response(&web, StatusCode::BAD_REQUEST, "/approvals", Some(&SignInError::BadState.to_string()));
    };
    if let Some(error) = param(query, "error") {
        let text = SignInError::Refused(error.chars().filter(|c| !c.is_control()).take(100).collect()).to_string();
        return sign_in_response(&web, StatusCode::UNAUTHORIZED, &login.next, Some(&text));
    }
    let Some(code) = param(query, "code") else {
        return sign_in_response(&web, StatusCode::BAD_REQUEST, &login.next, Some("the identity provider sent no code"));
    };
    let id_token = match oidc.exchange(&code, &login).await {
        Ok(token) => token,
        Err(error) => {
            tracing::warn!(%error, "OIDC code exchange failed");
            return sign_in_response(&web, StatusCode::BAD_GATEWAY, &login.next, Some(&error.to_string()));
        }
    };
    let verified = web.inner.auth.verify_id_token(oidc.issuer(), &id_token, oidc.client_id(), &login.nonce).await;
    match verified {
        Ok(caller) => start_session(&web, &caller, &login.next, true),
        Err(error) => {
            tracing::warn!(%error, "OIDC ID token refused");
            sign_in_response(&web, StatusCode::UNAUTHORIZED, &login.next, Some(&format!("the ID token was refused: {error}")))
        }
    }
}

/// `POST /approvals/sign-out`: the session ends on the server too, so a copy of the
/// cookie kept elsewhere no longer signs anyone in.
async fn sign_out(AxumState(web): AxumState<Web>, headers: HeaderMap) -> Response {
    for session in cookies(&headers, SESSION_COOKIE).filter_map(|c| web.inner.keys.open_session(c)) {
        web.inner.keys.end(&session.sid);
        tracing::info!(principal = %session.caller.principal, "signed out of the approver page");
    }
    let mut response = see_other("/approvals/sign-in");
    if let Some(value) = web.cookie(SESSION_COOKIE, None, "/", 0) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn start_session(web: &Web, caller: &Caller, next: &str, clear_login: bool) -> Response {
    let (cookie, max_age) = match web.inner.keys.session(caller, web.inner.session_secs) {
        Ok(session) => session,
        Err(error) => return sign_in_response(web, StatusCode::INTERNAL_SERVER_ERROR, next, Some(&error.to_string())),
    };
    tracing::info!(principal = %caller.principal, "signed in to the approver page");
    let mut response = see_other(next);
    let headers = response.headers_mut();
    // Path `/`: the audit view at `/audit` shares the sign-in. Nothing else reads this
    // cookie (the API and `/mcp` take only `Authorization`), so it credentials nothing more.
    if let Some(value) = web.cookie(SESSION_COOKIE, Some(&cookie), "/", max_age) {
        headers.append(header::SET_COOKIE, value);
    }
    if clear_login && let Some(value) = web.cookie(LOGIN_COOKIE, None, "/approvals/oidc", 0) {
        headers.append(header::SET_COOKIE, value);
    }
    response
}

// ---- helpers ----------------------------------------------------------------------------

/// The viewer, or the response to send instead: the sign-in page (401).
async fn signed_in(web: &Web, client: ClientAddr, headers: &HeaderMap, next: &str) -> Result<Viewer, Response> {
    match web.viewer(client, headers).await {
        Ok(Some(viewer)) => Ok(viewer),
        Ok(None) => Err(sign_in_response(web, StatusCode::UNAUTHORIZED, next, None)),
        Err(error) => {
            let mut response = sign_in_response(web, auth_status(&error), next, Some(&error.to_string()));
            retry_after(&mut response, &error);
            Err(response)
        }
    }
}

/// The status of a refused credential on the page.
fn auth_status(error: &AuthError) -> StatusCode {
    match error {
        AuthError::MissingCredentials | AuthError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
        AuthError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        AuthError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// The approval `id` if `viewer` may see it; otherwise the same 404 page as for an id
/// that does not exist, so neither reading nor deciding tells an outsider that it exists
/// or who may decide it.
// The error is the page to send, built once per refused request: its size does not matter.
#[allow(clippy::result_large_err)]
fn visible(web: &Web, id: &str, viewer: &Viewer) -> Result<Approval, Response> {
    let not_found = || message(StatusCode::NOT_FOUND, "Not found", Some(viewer), "There is no such approval.");
    ApprovalId::parse(id)
        .and_then(|id| web.inner.broker.get(&id))
        .filter(|approval| may_view(approval, &viewer.caller))
        .ok_or_else(not_found)
}

fn message(status: StatusCode, title: &str, viewer: Option<&Viewer>, text: &str) -> Response {
    html(status, title, viewer, |_| format!("<h1>{}</h1>{}", page::esc(title), page::note("error", text)))
}

fn html(status: StatusCode, title: &str, viewer: Option<&Viewer>, body: impl FnOnce(&str) -> String) -> Response {
    page_response(status, title, viewer.map(|v| &v.caller), body)
}

/// An HTML page in the approver page's layout with its security headers (CSP with a
/// per-response nonce, no caching, no framing); `body` gets the nonce. Pages beside this
/// one (the audit view) answer through it, so they share one set of rules.
pub fn page_response(status: StatusCode, title: &str, caller: Option<&Caller>, body: impl FnOnce(&str) -> String) -> Response {
    // An empty nonce (RNG failure) makes the CSP refuse the inline style and script:
    // the page degrades, it does not open up.
    let nonce = session::random_text().unwrap_or_default();
    let header = Header { who: caller.map(|c| (c.shown_name(), c.principal.as_str())) };
    let document = page::layout(title, &nonce, &header, &body(&nonce));
    let csp = format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; \
         img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut response = (status, document).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: with it browsers send `Origin: null` on form posts, which the
    // Host/Origin guard rightly refuses.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if let Ok(value) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Values of cookie `name` in the request (there may be several `Cookie` headers).
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| pair.trim().split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// One value of an `application/x-www-form-urlencoded` query.
fn param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// Where to go after signing in: a path under `/approvals` or `/audit`, never another site.
fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n.starts_with("/approvals") || n == "/audit" || n.starts_with("/audit/"))
                && n.len() <= 200
                && !n.contains("//")
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b)) =>
        {
            n.to_owned()
        }
        _ => "/approvals".to_owned(),
    }
}

/// The fields the page's forms send; anything else is ignored.
#[derive(Default)]
struct Form {
    decision: Option<String>,
    comment: Option<String>,
    csrf: Option<String>,
    token: Option<String>,
    next: Option<String>,
}

impl Form {
    fn parse(body: &[u8]) -> Form {
        let mut form = Form::default();
        for (key, value) in url::form_urlencoded::parse(body) {
            let slot = match key.as_ref() {
                "decision" => &mut form.decision,
                "comment" => &mut form.comment,
                "csrf" => &mut form.csrf,
                "token" => &mut form.token,
                "next" => &mut form.next,
                _ => continue,
            };
            // The first value counts; a repeated field cannot override it.
            slot.get_or_insert_with(|| value.into_owned());
        }
        form
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_approval_pages() {
        assert_eq!(local_next(Some("/approvals/ap-0123")), "/approvals/ap-0123");
        assert_eq!(local_next(Some("https://evil.example/approvals")), "/approvals");
        assert_eq!(local_next(Some("/approvals//evil.example")), "/approvals");
        assert_eq!(local_next(Some("/approvals/x?y=\"")), "/approvals");
        assert_eq!(local_next(None), "/approvals");
        assert_eq!(local_next(Some("/audit/calls/c-1")), "/audit/calls/c-1");
        assert_eq!(local_next(Some("/auditx")), "/approvals");
    }

    #[test]
    fn the_first_form_value_wins() {
        let form = Form::parse(b"decision=deny&decision=approve&csrf=a%2Bb&comment=hi+there");
        assert_eq!(form.decision.as_deref(), Some("deny"));
        assert_eq!(form.csrf.as_deref(), Some("a+b"));
        assert_eq!(form.comment.as_deref(), Some("hi there"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; airlock_session=xyz; b=2"));
        assert_eq!(cookies(&headers, SESSION_COOKIE).collect::<Vec<_>>(), vec!["xyz"]);
    }
}

#[cfg(test)]
mod router_tests;
