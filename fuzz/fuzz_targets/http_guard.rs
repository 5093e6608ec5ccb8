//! The Host/Origin guard in front of every HTTP route: arbitrary `Host` and `Origin`
//! header values (as many as the client sends) against the default guard and a generated
//! one. With the default guard an accepted request must name a loopback host.
#![no_main]

use airlock::http::HostGuard;
use arbitrary::Arbitrary;
use http::header::{HOST, ORIGIN};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    hosts: Vec<Vec<u8>>,
    origins: Vec<Vec<u8>>,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    check_origin: bool,
}

fuzz_target!(|input: Input| {
    let mut headers = HeaderMap::new();
    // Only values hyper would have let through reach the guard.
    for host in &input.hosts {
        if let Ok(value) = HeaderValue::from_bytes(host) {
            headers.append(HOST, value);
        }
    }
    for origin in &input.origins {
        if let Ok(value) = HeaderValue::from_bytes(origin) {
            headers.append(ORIGIN, value);
        }
    }
    let default = HostGuard::default();
    if airlock::fuzzing::host_guard_verdict(&default, &headers).is_ok() {
        let host = headers.get(HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
        let host = host.expect("an accepted request has one text Host");
        assert!(
            ["localhost", "127.0.0.1", "[::1]", "::1"].iter().any(|h| host.starts_with(h)),
            "default guard accepted Host {host:?}"
        );
    }
    let guard = HostGuard {
        // Entries as `airlock check` would take them: unparsable ones are config errors.
        allowed_hosts: Some(input.allowed_hosts.iter().filter_map(|h| airlock::http::HostPattern::parse(h).ok()).collect()),
        allowed_origins: input.allowed_origins,
        check_origin: input.check_origin,
    };
    let _ = airlock::fuzzing::host_guard_verdict(&guard, &headers);
});
