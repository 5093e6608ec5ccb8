//! `Mcp-Method` / `Mcp-Name` (SEP-2243) against the body, on every MCP POST.
//!
//! An intermediary in front of Airlock may route, limit or authorize on these headers
//! while Airlock enforces policy on the body; a request whose headers say one thing and
//! whose body another is a confused deputy. rmcp checks them only for requests that
//! declare `MCP-Protocol-Version: 2026-07-28` or later; this check covers the rest (any
//! version header or none, `/mcp` and the legacy `/message`).
//!
//! Owns: the rule "a header present and disagreeing with the body gets 400 (`-32020`),
//! and nothing is handed to the gateway".
//! Uses: rmcp's header names and value encoding (`=?base64?…?=`).
//! Must not: require the headers (rmcp does, for the revision that asks for them), or
//! read a body when neither header is present.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rmcp::model::ErrorCode;
use rmcp::transport::common::http_header::{BASE64_HEADER_PREFIX, BASE64_HEADER_SUFFIX, HEADER_MCP_METHOD, HEADER_MCP_NAME};
use serde_json::{Value, json};

/// Which `params` member `Mcp-Name` mirrors, per method (as rmcp's own check).
fn name_member(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// The middleware; its state is the MCP body limit.
pub(super) async fn check(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if request.method() != Method::POST || (!headers.contains_key(HEADER_MCP_METHOD) && !headers.contains_key(HEADER_MCP_NAME)) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, format!("the request body exceeds {limit} bytes")).into_response();
    };
    if let Err((id, reason)) = agrees(&parts.headers, &bytes) {
        tracing::warn!(%reason, "refused an MCP request whose headers disagree with its body");
        let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": ErrorCode::HEADER_MISMATCH.0, "message": reason}});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Whether every message of the body agrees with the headers; else the offending
/// message's id and why. A body that is not JSON is left to the MCP layer to refuse.
fn agrees(headers: &HeaderMap, body: &Bytes) -> Result<(), (Value, String)> {
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else { return Ok(()) };
    let messages = match &parsed {
        Value::Array(batch) => batch.iter().collect(),
        one => vec![one],
    };
    for message in messages {
        let Some(method) = message.get("method").and_then(Value::as_str) else { continue };
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        agrees_one(headers, method, message.get("params")).map_err(|reason| (id, reason))?;
    }
    Ok(())
}

fn agrees_one(headers: &HeaderMap, method: &str, params: Option<&Value>) -> Result<(), String> {
    if let Some(header) = single(headers, HEADER_MCP_METHOD)?
        && header != method
    {
        return Err(format!("Mcp-Method header `{header}` does not match body method `{method}`"));
    }
    let (Some(raw), Some(member)) = (single(headers, HEADER_MCP_NAME)?, name_member(method)) else { return Ok(()) };
    let header = decode(raw).ok_or_else(|| "Mcp-Name header is not valid Base64".to_owned())?;
    match params.and_then(|p| p.get(member)).and_then(Value::as_str) {
        Some(body) if body == header => Ok(()),
        Some(body) => Err(format!("Mcp-Name header `{header}` does not match body {member} `{body}`")),
        None => Err(format!("Mcp-Name header `{header}` names what the body of `{method}` does not")),
    }
}

/// The one value of a singleton header; two values are refused (an intermediary that
/// picks the other one would route on what this request does not do).
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(format!("duplicate {name} header"));
    }
    value.to_str().map(Some).map_err(|_| format!("{name} header contains invalid characters"))
}

/// A header value, unwrapped from `=?base64?…?=` when so encoded.
fn decode(value: &str) -> Option<String> {
    match value.strip_prefix(BASE64_HEADER_PREFIX).and_then(|inner| inner.strip_suffix(BASE64_HEADER_SUFFIX)) {
        Some(inner) => String::from_utf8(base64::prelude::BASE64_STANDARD.decode(inner).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header value"));
        }
        map
    }

    fn call(name: &str) -> Bytes {
        Bytes::from(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name}}).to_string())
    }

    #[test]
    fn present_headers_must_agree_with_every_message() {
        assert!(agrees(&headers(&[("mcp-method", "tools/call"), ("mcp-name", "fs__read")]), &call("fs__read")).is_ok());
        assert!(agrees(&headers(&[("mcp-name", "=?base64?ZnNfX3JlYWQ=?=")]), &call("fs__read")).is_ok(), "base64 form");
        let refused = |pairs: &[(&'static str, &'static str)], body: Bytes| agrees(&headers(pairs), &body).is_err();
        assert!(refused(&[("mcp-name", "fs__echo")], call("fs__delete")));
        assert!(refused(&[("mcp-method", "tools/list")], call("fs__read")));
        assert!(refused(&[("mcp-name", "fs__read"), ("mcp-name", "fs__echo")], call("fs__read")), "duplicates");
        assert!(refused(&[("mcp-name", "=?base64?!!?=")], call("fs__read")), "bad base64");
        let batch = Bytes::from(json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "fs__read"}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fs__delete"}},
        ]).to_string());
        let (id, _) = agrees(&headers(&[("mcp-name", "fs__read")]), &batch).expect_err("the second disagrees");
        assert_eq!(id, json!(2));
        // A method without a name ignores Mcp-Name, as rmcp's check does.
        let list = Bytes::from(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string());
        assert!(agrees(&headers(&[("mcp-name", "anything")]), &list).is_ok());
        assert!(agrees(&headers(&[("mcp-method", "tools/list")]), &Bytes::from_static(b"not json")).is_ok(), "left to rmcp");
    }
}
