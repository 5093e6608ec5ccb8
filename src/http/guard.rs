//! DNS-rebinding protection: the Host and Origin checks in front of every route.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which `Host` and `Origin` values are accepted.
#[derive(Debug, Clone)]
pub struct HostGuard {
    /// Host names, or `host:port` authorities; `None` = any well-formed host (not
    /// recommended).
    pub allowed_hosts: Option<Vec<HostPattern>>,
    /// Browser origins (`scheme://host[:port]`). Empty = only origins whose host is an
    /// allowed host; a request without `Origin` (not a browser) always passes this check.
    pub allowed_origins: Vec<String>,
    /// `false` skips the Origin check entirely.
    pub check_origin: bool,
}

impl Default for HostGuard {
    fn default() -> Self {
        Self {
            allowed_hosts: Some(
                ["localhost", "127.0.0.1", "::1"].iter().filter_map(|h| HostPattern::parse(h).ok()).collect(),
            ),
            allowed_origins: Vec::new(),
            check_origin: true,
        }
    }
}

impl HostGuard {
    fn host_allowed(&self, authority: &str) -> bool {
        // Malformed is refused even when any host is accepted: `[::1]evil.com` is not a host.
        let Ok(authority) = Authority::parse(authority) else { return false };
        self.allowed_hosts.as_ref().is_none_or(|allowed| allowed.iter().any(|pattern| pattern.matches(&authority)))
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

/// The middleware: 403 with the reason when Host or Origin is not allowed.
pub(crate) async fn check(State(guard): State<Arc<HostGuard>>, request: Request, next: Next) -> Response {
    match guard.verdict(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            tracing::warn!(reason, "request refused by the Host/Origin guard");
            crate::telemetry::rejected(crate::telemetry::Rejected::HostOrigin);
            (StatusCode::FORBIDDEN, reason).into_response()
        }
    }
}

/// A host as it may appear in `Host` or an origin: a DNS name (lowercased, without a
/// trailing dot), an IPv4 address, or an IPv6 address (written in brackets).
#[derive(Debug, Clone)]
enum Host<'a> {
    Name(Cow<'a, str>),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl PartialEq for Host<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            (Host::V4(a), Host::V4(b)) => a == b,
            (Host::V6(a), Host::V6(b)) => a == b,
            _ => false,
        }
    }
}

/// `host[:port]`, checked whole: nothing may follow the host but a port.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Authority<'a> {
    host: Host<'a>,
    port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// Parses `name`, `1.2.3.4`, `[v6]`, each with an optional `:port` (1 to 65535
    /// digits' worth). Anything else (`[::1]evil.com`, `a b`, `host:`, `::1`, `1.2.3`,
    /// `user@host`, a zone id) is an error.
    pub(crate) fn parse(text: &'a str) -> Result<Authority<'a>, &'static str> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or("unclosed '[' in host")?;
            let v6 = inside.parse::<Ipv6Addr>().map_err(|_| "not an IPv6 address in brackets")?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("only a port may follow ']'")?),
            };
            (Host::V6(v6), port)
        } else {
            let (host, port) = match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            if host.contains(':') {
                return Err("an IPv6 address must be written in brackets");
            }
            (parse_host(host)?, port)
        };
        let port = match port {
            None => None,
            Some(digits) => Some(parse_port(digits)?),
        };
        Ok(Authority { host, port })
    }
}

fn parse_port(digits: &str) -> Result<u16, &'static str> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port must be 1 to 5 digits");
    }
    match digits.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be between 1 and 65535"),
        Ok(port) => Ok(port),
    }
}

/// A DNS name or an IPv4 address (RFC 1123 labels; `_` is accepted, as container and
/// service names use it). A name whose last label is numeric must be a whole IPv4
/// address: browsers read `1.2.3` or `0x7f.1` as numbers, so it is refused.
fn parse_host(text: &str) -> Result<Host<'_>, &'static str> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() || name.len() > 253 {
        return Err("the host name is empty or too long");
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") || last.starts_with("0X") {
        return name.parse::<Ipv4Addr>().map(Host::V4).map_err(|_| "not an IPv4 address");
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err("not a DNS name");
        }
    }
    Ok(Host::Name(Cow::Borrowed(name)))
}

/// One entry of `[http] allowed_hosts`: a host (any port) or a host with a port. A bare
/// IPv6 address (`::1`) is accepted here, bracketed or not.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPattern(Authority<'static>);

impl HostPattern {
    /// Parses an `allowed_hosts` entry; `Err` says why it is not one.
    pub fn parse(text: &str) -> Result<HostPattern, &'static str> {
        if let Ok(v6) = text.parse::<Ipv6Addr>() {
            return Ok(HostPattern(Authority { host: Host::V6(v6), port: None }));
        }
        let Authority { host, port } = Authority::parse(text)?;
        let host = match host {
            Host::Name(name) => Host::Name(Cow::Owned(name.into_owned())),
            Host::V4(v4) => Host::V4(v4),
            Host::V6(v6) => Host::V6(v6),
        };
        Ok(HostPattern(Authority { host, port }))
    }

    fn matches(&self, authority: &Authority) -> bool {
        self.0.host == authority.host && self.0.port.is_none_or(|port| authority.port == Some(port))
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

    #[test]
    fn well_formed_hosts_parse() {
        for good in [
            "localhost", "LOCALHOST", "localhost:8787", "localhost.", "127.0.0.1", "127.0.0.1:1", "10.0.0.5:65535",
            "[::1]", "[::1]:8787", "[2001:db8::1]", "[::ffff:127.0.0.1]:80", "airlock.example.com",
            "a-b.example.com:443", "my_service:8787", "xn--bcher-kva.example", "a.b.c.d.e.f", "1a.example",
        ] {
            assert!(Authority::parse(good).is_ok(), "{good} should parse");
        }
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for bad in [
            "", ":", ":80", "[::1]evil.com", "[::1]:80evil", "[::1]:", "[::1", "::1]", "[::1]]", "[[::1]]", "::1", "::1:80",
            "[evil.com]", "[::1%eth0]", "[127.0.0.1]", "localhost:", "localhost:0", "localhost:65536", "localhost:123456",
            "localhost:80:80", "localhost:+80", "localhost: 80", "local host", "evil.com/x", "evil.com?x", "evil.com#x",
            "user@localhost", "user:pw@localhost", "localhost\\evil", "-evil.com", "evil-.com", "evil..com", ".evil.com",
            "evil.com..", "1.2.3", "256.1.1.1", "1.2.3.4.5", "0x7f.0.0.1", "127.0.0.01", "127.1", "017.0.0.1",
            "exämple.com", "a\tb", "127.0.0.1 ", " 127.0.0.1",
        ] {
            assert!(Authority::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(Authority::parse(&long_label).is_err());
        let long_name = ["abcdefghi"; 30].join(".");
        assert!(Authority::parse(&long_name).is_err());
    }

    #[test]
    fn the_guard_refuses_a_host_with_trailing_text_even_when_its_prefix_is_allowed() {
        let guard = HostGuard::default();
        for bad in ["[::1]evil.com", "[::1]evil.com:8787", "localhost:8787evil", "127.0.0.1:80:80", "localhost@evil.com"] {
            assert!(guard.verdict(&headers(&[("host", bad)])).is_err(), "{bad}");
        }
        // Any host accepted (check_host = false) still means a well-formed one.
        let any = HostGuard { allowed_hosts: None, ..HostGuard::default() };
        assert!(any.verdict(&headers(&[("host", "evil.example")])).is_ok());
        assert!(any.verdict(&headers(&[("host", "[::1]evil.com")])).is_err());
    }

    #[test]
    fn patterns_match_by_host_and_port() {
        let guard = HostGuard {
            allowed_hosts: Some(["gw.example.com:8443", "::1", "10.0.0.5"].iter().map(|h| HostPattern::parse(h).unwrap()).collect()),
            ..HostGuard::default()
        };
        for good in ["gw.example.com:8443", "GW.example.COM:8443", "gw.example.com.:8443", "[::1]", "[0:0::1]:9", "10.0.0.5:1"] {
            assert!(guard.verdict(&headers(&[("host", good)])).is_ok(), "{good}");
        }
        for bad in ["gw.example.com", "gw.example.com:8444", "localhost", "10.0.0.6", "[::2]"] {
            assert!(guard.verdict(&headers(&[("host", bad)])).is_err(), "{bad}");
        }
        assert!(HostPattern::parse("[::1]evil.com").is_err() && HostPattern::parse("*.example.com").is_err());
    }

    #[test]
    fn an_origin_with_a_malformed_authority_is_refused() {
        let guard = HostGuard::default();
        assert!(guard.verdict(&headers(&[("host", "localhost"), ("origin", "http://[::1]evil.com")])).is_err());
        assert!(guard.verdict(&headers(&[("host", "localhost"), ("origin", "http://[::1]:3000")])).is_ok());
    }
}
