//! Owns: what happens after a presented credential is refused: a rate-limited log line
//! (never the token) and a per-client-address limit on failures, past which the address
//! gets "try again later" before its credentials are even looked at.
//! Uses: `governor` (GCRA rate limiters: one keyed by address for failures, one direct
//! for log lines).
//! Must not: log or keep a token, or count requests that presented no credential (a
//! client's first, unauthenticated probe is how OAuth discovery starts).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AuthError;

/// Addresses kept in the block list at most; beyond it, expired entries are dropped first
/// and then the oldest, so a flood of spoofed sources cannot grow memory without bound.
const MAX_BLOCKED: usize = 65_536;
/// Keyed limiter entries beyond which idle addresses are forgotten.
const PRUNE_AT: usize = 16_384;

/// How many failed authentications an address may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures per minute per client address, also the burst (default 20).
    pub failures_per_minute: NonZeroU32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self { failures_per_minute: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN) }
    }
}

/// The failure throttle and its log.
#[derive(Debug)]
pub(crate) struct Throttle {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses over their limit, with when they may try again.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    lines: DefaultDirectRateLimiter,
    suppressed: AtomicU64,
    clock: DefaultClock,
}

impl Throttle {
    /// A throttle allowing `settings.failures_per_minute` failures per address.
    pub(crate) fn new(settings: ThrottleSettings) -> Self {
        let lines = Quota::per_minute(NonZeroU32::new(6).unwrap_or(NonZeroU32::MIN));
        Self {
            failures: RateLimiter::keyed(Quota::per_minute(settings.failures_per_minute)),
            blocked: Mutex::new(HashMap::new()),
            lines: RateLimiter::direct(lines.allow_burst(NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN))),
            suppressed: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    /// Refuses an address that is over its limit, before its credential is checked (a
    /// throttled guesser learns nothing, right or wrong).
    pub(crate) fn gate(&self, client: Option<IpAddr>) -> Result<(), AuthError> {
        let key = key(client);
        let mut blocked = lock(&self.blocked);
        match blocked.get(&key) {
            Some(until) if *until > Instant::now() => Err(too_many(*until - Instant::now())),
            Some(_) => {
                blocked.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a refused credential from `client` on `route`, logs it (rate-limited), and
    /// returns the error to answer with: `error` itself, or "too many" once the address is
    /// over its limit.
    pub(crate) fn failed(&self, client: Option<IpAddr>, route: &str, error: AuthError) -> AuthError {
        let key = key(client);
        self.log(client, route, &error);
        if self.failures.len() > PRUNE_AT {
            self.failures.retain_recent();
        }
        match self.failures.check_key(&key) {
            Ok(()) => error,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now()).max(Duration::from_secs(1));
                self.block(key, wait);
                too_many(wait)
            }
        }
    }

    fn block(&self, key: IpAddr, wait: Duration) {
        let mut blocked = lock(&self.blocked);
        if blocked.len() >= MAX_BLOCKED {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            if blocked.len() >= MAX_BLOCKED
                && let Some(oldest) = blocked.iter().min_by_key(|(_, until)| **until).map(|(ip, _)| *ip)
            {
                blocked.remove(&oldest);
            }
        }
        blocked.insert(key, Instant::now() + wait);
    }

    /// One warning per refused credential, at most a few a minute; the next line that is
    /// written says how many were left out. The reason is ours (it never quotes the token).
    fn log(&self, client: Option<IpAddr>, route: &str, error: &AuthError) {
        if self.lines.check().is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let client = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        tracing::warn!(%client, route, reason = %error, suppressed, "authentication failed");
    }
}

/// The bucket of an address. IPv6 clients are counted per /64, the block one host is
/// usually given (else one host could rotate through 2^64 addresses); an IPv4-mapped IPv6
/// address counts as its IPv4 address.
fn key(client: Option<IpAddr>) -> IpAddr {
    // Without a known address every such request shares one bucket: fail closed.
    match client.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        Some(v4) => v4,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

fn too_many(wait: Duration) -> AuthError {
    // Round up: a client that waits Retry-After seconds must find the door open.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    AuthError::TooManyFailures { retry_after_secs: secs.max(1) }
}

// A poisoned lock only means another thread panicked mid-update; the map is still valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::TokenProblem;

    #[test]
    fn an_address_past_its_limit_is_gated_and_others_are_not() {
        let throttle = Throttle::new(ThrottleSettings { failures_per_minute: NonZeroU32::new(3).unwrap() });
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(throttle.gate(a).is_ok());
            let e = throttle.failed(a, "/mcp", TokenProblem::UnknownToken.into());
            assert_eq!(e, AuthError::InvalidToken(TokenProblem::UnknownToken));
        }
        let e = throttle.failed(a, "/mcp", TokenProblem::UnknownToken.into());
        assert!(matches!(e, AuthError::TooManyFailures { retry_after_secs } if retry_after_secs >= 1), "{e:?}");
        assert!(matches!(throttle.gate(a), Err(AuthError::TooManyFailures { .. })));
        assert!(throttle.gate(b).is_ok());
    }

    #[test]
    fn ipv6_hosts_count_per_64_and_mapped_v4_as_v4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(key(Some(one)), key(Some(same_64)));
        assert_ne!(key(Some(one)), key(Some(other_64)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(key(Some(mapped)), IpAddr::from([10, 0, 0, 1]));
    }
}
