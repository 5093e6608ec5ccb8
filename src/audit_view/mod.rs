//! The audit view at `/audit`, beside the approver page: for signed-in auditors, the calls
//! of a period filtered by tool, caller and decision, one call's chain of records with
//! their inclusion proofs, the log's verification status, and the report to download.
//!
//! Owns: the `/audit` routes, who counts as an auditor (`[approvals.web] auditors`), the
//! `audit_viewed` record of every view.
//! Uses: `approval::web` (its sign-in sessions and page layout, so one set of escaping, CSP
//! and session rules), `audit` (the running log's reader, `verify_live`, `append`),
//! `report` (the one report builder), `policy::Approver`.
//! Must not: write anything to the log but `audit_viewed` records through the normal
//! writer, change any state, or show anything before the view's record is durable.
//!
//! Reads go through `AuditLog::reader()`, as the witness publisher's do: the database the
//! writer has open, never a second handle on the data dir.

mod calls;
mod page;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::approval::api::ClientAddr;
use crate::approval::web::{Web, page_response};
use crate::audit::{AuditLog, LogPaths, Record, RecordKind, Seq, Trust, verify_live};
use crate::identity::{AuthMethod, Caller};
use crate::policy::{Approver, parse_approver};
use crate::report::{Period, Verification, gather, records_of, render_html};

use calls::{CallFilter, CallRow};

/// Longest filter value kept (and recorded); longer ones are cut.
const MAX_FILTER: usize = 200;

/// The view's state. Cheap to clone.
#[derive(Clone)]
pub struct AuditView {
    inner: Arc<Inner>,
}

struct Inner {
    web: Web,
    audit: AuditLog,
    paths: LogPaths,
    data_dir: String,
    auditors: Vec<Approver>,
}

/// Why the view could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("approvals.web.auditors: {0}")]
pub struct AuditorsError(String);

impl AuditView {
    /// Sets the view up over the running gateway's log. `auditors` are `group:NAME` /
    /// `user:NAME` (checked by the config already; checked again here).
    pub fn new(web: Web, audit: AuditLog, data_dir: &std::path::Path, auditors: &[String]) -> Result<AuditView, AuditorsError> {
        let auditors = auditors.iter().map(|a| parse_approver(a)).collect::<Result<Vec<_>, _>>().map_err(AuditorsError)?;
        Ok(AuditView {
            inner: Arc::new(Inner {
                web,
                audit,
                paths: LogPaths::new(data_dir, None),
                data_dir: data_dir.display().to_string(),
                auditors,
            }),
        })
    }

    /// The `/audit` routes. Mount them behind the Host/Origin guard.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/audit", get(overview))
            .route("/audit/calls/{id}", get(call))
            .route("/audit/proof/{seq}", get(proof))
            .route("/audit/report", get(report))
            .with_state(self.clone())
    }

    fn is_auditor(&self, caller: &Caller) -> bool {
        caller.via != AuthMethod::Anonymous
            && self.inner.auditors.iter().any(|a| match a {
                Approver::User(u) => u == caller.principal.as_str(),
                Approver::Group(g) => caller.in_group(g),
            })
    }

    /// The signed-in auditor, or the response to send: the sign-in page (anonymous),
    /// 403 (signed in, not an auditor).
    // The error is the page to send, built once per refused request.
    #[allow(clippy::result_large_err)]
    async fn auditor(&self, client: ClientAddr, headers: &HeaderMap, next: &str) -> Result<Caller, Response> {
        let caller = self.inner.web.signed_in_caller(client, headers, next).await?;
        if self.is_auditor(&caller) {
            return Ok(caller);
        }
        tracing::warn!(principal = %caller.principal, "audit view refused: not an auditor");
        Err(page_response(StatusCode::FORBIDDEN, "Not an auditor", Some(&caller), |_| page::not_an_auditor()))
    }

    /// Records the view before anything is shown; `Err` is the 503 to send instead.
    #[allow(clippy::result_large_err)]
    async fn record(&self, caller: &Caller, detail: Value) -> Result<(), Response> {
        let record = Record::new(RecordKind::AuditViewed).principal(caller.principal.as_str()).detail(detail);
        match self.inner.audit.append(record).await {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::error!(%error, "could not record audit_viewed; the view is not shown");
                Err(page_response(StatusCode::SERVICE_UNAVAILABLE, "Not recorded", Some(caller), |_| {
                    page::note_page("The audit log could not record this view, so nothing is shown. Try again later.")
                }))
            }
        }
    }

    /// Every record of the log and its verification, read off the request's thread.
    async fn read(&self) -> Result<(Vec<Value>, Verification), String> {
        let view = self.clone();
        tokio::task::spawn_blocking(move || {
            let reader = view.inner.audit.reader().map_err(|e| e.to_string())?;
            let records = records_of(&reader).map_err(|e| e.to_string())?;
            let trust = Trust { anchor: view.inner.audit.public_key() };
            let reverify = format!("airlock log verify --data-dir {} --pubkey KEY (the output of `airlock keys show`)", view.inner.data_dir);
            let verification = Verification::of(verify_live(&reader, &view.inner.paths, trust), reverify);
            Ok((records, verification))
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// `GET /audit?from&to&tool&principal&decision`.
async fn overview(State(view): State<AuditView>, client: ClientAddr, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let caller = match view.auditor(client, &headers, "/audit").await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let filter = CallFilter {
        from: param(query.as_deref(), "from"),
        to: param(query.as_deref(), "to"),
        tool: param(query.as_deref(), "tool"),
        principal: param(query.as_deref(), "principal"),
        decision: param(query.as_deref(), "decision"),
    };
    if let Err(why) = filter.period() {
        return page_response(StatusCode::BAD_REQUEST, "Audit", Some(&caller), |_| page::note_page(&why));
    }
    if let Err(response) = view.record(&caller, json!({"view": "calls", "filter": filter.to_value()})).await {
        return response;
    }
    let (records, verification) = match view.read().await {
        Ok(read) => read,
        Err(error) => return unreadable(&caller, &error),
    };
    let rows: Vec<CallRow> = calls::rows(&records);
    let choices = calls::Choices::of(&rows);
    let shown: Vec<&CallRow> = rows.iter().rev().filter(|r| filter.matches(r)).collect();
    page_response(StatusCode::OK, "Audit", Some(&caller), |nonce| page::overview(nonce, &verification, &filter, &choices, &shown))
}

/// `GET /audit/calls/{id}`: one call's records in order.
async fn call(State(view): State<AuditView>, client: ClientAddr, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let id = cut(&id);
    let next = format!("/audit/calls/{}", if id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) { id.as_str() } else { "" });
    let caller = match view.auditor(client, &headers, &next).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    if let Err(response) = view.record(&caller, json!({"view": "call", "call_id": id})).await {
        return response;
    }
    let (records, verification) = match view.read().await {
        Ok(read) => read,
        Err(error) => return unreadable(&caller, &error),
    };
    let chain = calls::chain(&records, &id);
    let checkpoints = match view.inner.audit.reader().and_then(|r| r.checkpoints()) {
        Ok(checkpoints) => checkpoints.iter().map(|c| c.size).collect::<Vec<u64>>(),
        Err(error) => return unreadable(&caller, &error.to_string()),
    };
    if chain.is_empty() {
        return page_response(StatusCode::NOT_FOUND, "No such call", Some(&caller), |_| page::note_page("The log holds no record of this call."));
    }
    page_response(StatusCode::OK, &format!("Call {id}"), Some(&caller), |nonce| page::chain(nonce, &id, &chain, &checkpoints, &verification))
}

/// `GET /audit/proof/{seq}`: the inclusion proof of one record, as `airlock log prove` prints it.
async fn proof(State(view): State<AuditView>, client: ClientAddr, Path(seq): Path<String>, headers: HeaderMap) -> Response {
    let caller = match view.auditor(client, &headers, "/audit").await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let Some(seq) = seq.parse::<u64>().ok().filter(|s| *s > 0) else {
        return page_response(StatusCode::NOT_FOUND, "No such record", Some(&caller), |_| page::note_page("There is no such record."));
    };
    if let Err(response) = view.record(&caller, json!({"view": "proof", "seq": seq})).await {
        return response;
    }
    let proved = view.inner.audit.reader().and_then(|r| r.prove(Seq::new(seq)));
    match proved {
        Ok(proof) => download(proof.to_value().to_string(), "application/json", &format!("airlock-proof-{seq}.json")),
        Err(error) => page_response(StatusCode::NOT_FOUND, "No proof", Some(&caller), |_| {
            page::note_page(&format!("No inclusion proof for record {seq} yet: {error}. A record is provable once a checkpoint covers it."))
        }),
    }
}

/// `GET /audit/report?from&to&format=html|json`: the report of `airlock report`.
async fn report(State(view): State<AuditView>, client: ClientAddr, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let caller = match view.auditor(client, &headers, "/audit").await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let filter = CallFilter { from: param(query.as_deref(), "from"), to: param(query.as_deref(), "to"), ..CallFilter::default() };
    let json = param(query.as_deref(), "format").as_deref() == Some("json");
    let period = match filter.period() {
        Ok(period) => period,
        Err(why) => return page_response(StatusCode::BAD_REQUEST, "Report", Some(&caller), |_| page::note_page(&why)),
    };
    if let Err(response) = view.record(&caller, json!({"view": "report", "filter": filter.to_value(), "format": if json { "json" } else { "html" }})).await {
        return response;
    }
    let (records, verification) = match view.read().await {
        Ok(read) => read,
        Err(error) => return unreadable(&caller, &error),
    };
    let name = format!("airlock-report-{}-{}", period.from, period.to);
    let evidence = gather(&records, period, verification, view.inner.data_dir.clone());
    if json {
        return match serde_json::to_string_pretty(&evidence) {
            Ok(text) => download(text, "application/json", &format!("{name}.json")),
            Err(error) => unreadable(&caller, &error.to_string()),
        };
    }
    download(render_html(&evidence), "text/html; charset=utf-8", &format!("{name}.html"))
}

fn unreadable(caller: &Caller, error: &str) -> Response {
    tracing::error!(%error, "audit view could not read the log");
    page_response(StatusCode::INTERNAL_SERVER_ERROR, "Unreadable", Some(caller), |_| {
        page::note_page(&format!("The audit log could not be read: {error}"))
    })
}

/// A file to save. The report carries its own CSP (no scripts, no outside loads); the
/// header repeats it for the browser that opens it from here.
fn download(body: String, content_type: &'static str, name: &str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"),
    );
    // The name is made of dates that were checked and fixed words: a valid header value.
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// One value of the query, cut to [`MAX_FILTER`]; an empty value is no filter.
fn param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| cut(&v))
        .filter(|v| !v.trim().is_empty())
}

fn cut(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(MAX_FILTER).collect()
}

impl CallFilter {
    /// The period asked for: both dates, or the whole log when neither is given.
    fn period(&self) -> Result<Period, String> {
        let from = self.from.as_deref().unwrap_or("1970-01-01");
        let to = self.to.as_deref().unwrap_or("9999-12-31");
        Period::new(from, to)
    }
}

#[cfg(test)]
mod tests;
