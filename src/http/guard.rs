//! DNS-rebinding protection: the Host and Origin checks in front of every route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which `Host` and `Origin` values are accepted.
#[derive(Debug, Clone)]
pub struct HostGuard {
    /// Host names, or `host:port` authorities. Empty = any host (not recommended).
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`). Empty = only origins whose host is an
    /// allowed host; a request without `Origin` (not a browser) always passes this check.
    pub allowed_origins: Vec<String>,
    /// `false` skips the Origin check entirely.
    pub check_origin: bool,
}

impl Default for HostGuard {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into(), "::1".into()],
            allowed_origins: Vec::new(),
            check_origin: true,
        }
    }
}

impl HostGuard {
    fn host_allowed(&self, authority: &str) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        let host = strip_port(authority);
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(authority) || allowed.eq_ignore_ascii_case(host))
    }

    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        // Same origin as the (already allowed) Host: the gateway's own pages posting back
        // to it, e.g. the approver page's forms. Accepted even with an explicit list.
        if origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)) {
            return true;
        }
        if !self.allowed_origins.is_empty() {
            return self.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin));
        }
        match origin.split_once("://") {
            Some((_, authority)) => self.host_allowed(authority),
            None => false,
        }
    }

    pub(crate) fn verdict(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(host), None) => host.to_str().map_err(|_| "Host header is not text")?,
            (None, _) => return Err("missing Host header"),
            (Some(_), Some(_)) => return Err("more than one Host header"),
        };
        if !self.host_allowed(host) {
            return Err("Host not allowed (see [http] allowed_hosts)");
        }
        if !self.check_origin {
            return Ok(());
        }
        let mut origins = headers.get_all(header::ORIGIN).iter();
        match (origins.next(), origins.next()) {
            (None, _) => Ok(()),
            (Some(_), Some(_)) => Err("more than one Origin header"),
            (Some(origin), None) => {
                let origin = origin.to_str().map_err(|_| "Origin header is not text")?;
                if self.origin_allowed(origin, host) { Ok(()) } else { Err("Origin not allowed (see [http] allowed_origins)") }
            }
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → the host part.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') => host,
        _ => authority,
    }
}

/// The middleware: 403 with the reason when Host or Origin is not allowed.
pub(crate) async fn check(State(guard): State<Arc<HostGuard>>, request: Request, next: Next) -> Response {
    match guard.verdict(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            tracing::warn!(reason, "request refused by the Host/Origin guard");
            (StatusCode::FORBIDDEN, reason).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn loopback_host_with_port_is_allowed() {
        assert!(HostGuard::default().verdict(&headers(&[("host", "127.0.0.1:8787")])).is_ok());
        assert!(HostGuard::default().verdict(&headers(&[("host", "[::1]:8787")])).is_ok());
    }

    #[test]
    fn rebinding_host_is_refused() {
        assert!(HostGuard::default().verdict(&headers(&[("host", "evil.example:8787")])).is_err());
    }

    #[test]
    fn foreign_origin_is_refused_and_duplicate_origin_too() {
        let guard = HostGuard::default();
        assert!(guard.verdict(&headers(&[("host", "localhost"), ("origin", "https://evil.example")])).is_err());
        assert!(guard.verdict(&headers(&[("host", "localhost"), ("origin", "http://localhost:3000")])).is_ok());
        let twice = headers(&[("host", "localhost"), ("origin", "http://localhost"), ("origin", "http://localhost")]);
        assert!(guard.verdict(&twice).is_err());
    }

    #[test]
    fn explicit_origin_list_is_exact() {
        let guard = HostGuard { allowed_origins: vec!["https://app.example.com".into()], ..HostGuard::default() };
        assert!(guard.verdict(&headers(&[("host", "localhost"), ("origin", "https://app.example.com")])).is_ok());
        assert!(guard.verdict(&headers(&[("host", "localhost"), ("origin", "http://localhost:1")])).is_err());
    }

    #[test]
    fn the_gateways_own_origin_is_accepted_with_an_explicit_list() {
        // The approver page posts its forms back with the gateway's own origin.
        let guard = HostGuard { allowed_origins: vec!["https://app.example.com".into()], ..HostGuard::default() };
        assert!(guard.verdict(&headers(&[("host", "127.0.0.1:8787"), ("origin", "http://127.0.0.1:8787")])).is_ok());
        assert!(guard.verdict(&headers(&[("host", "127.0.0.1:8787"), ("origin", "http://127.0.0.1:9999")])).is_err());
    }
}
