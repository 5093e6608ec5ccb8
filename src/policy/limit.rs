//! Rate limits: `[[limit]]` entries of the policy files, and the counters that enforce them.
//!
//! Owns: `Limit` (the checked entry), `Rate`, parsing `[[limit]]` with every problem at its
//! line, `Limiter` (which limits count a call, in order), the one interface to where the
//! buckets live ([`Counters`], chosen once at start through [`LimitBackend`]) and its
//! in-memory backend (`governor`'s keyed GCRA buckets); the PostgreSQL one is
//! `limit/postgres.rs`.
//! Uses: `config` diagnostics, `rule::ToolGlobs`, `storage::PgPool` (the shared backend).
//! Must not: decide calls (that is `eval.rs`), write the audit log or hold calls; the
//! pipeline asks `Limiter::check` and records what it answers, and never knows which
//! backend counts.
//!
//! A limit counts per caller: each principal has its own bucket of `burst` calls, refilled
//! at `rate`. Every matching limit counts a call; the first that has no token left refuses
//! it. In memory (the default, and with sled) the counters start full when the gateway
//! starts and when a reload changes the policy set; on PostgreSQL every replica counts in
//! the same rows. A backend that cannot count refuses the call (fail closed).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use toml::Spanned;

use super::rule::{RuleId, ToolGlobs};
use crate::config::{ConfigErrors, Source};

pub(super) mod postgres;

/// Longest accepted period unit.
const DAY: Duration = Duration::from_secs(86_400);

/// How many calls per period, as written (`"30/min"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    calls: NonZeroU32,
    per: Duration,
    unit: &'static str,
}

impl Rate {
    /// Parses `N/unit` with unit `s`, `sec`, `second`, `min`, `minute`, `h`, `hour`, `d`
    /// or `day`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("\"{text}\" is not a rate; write calls per unit, e.g. \"30/min\" or \"1000/day\"");
        let (calls, unit) = text.split_once('/').ok_or_else(bad)?;
        let calls: u32 = calls.trim().parse().map_err(|_| bad())?;
        let calls = NonZeroU32::new(calls).ok_or_else(|| format!("\"{text}\": a rate needs at least 1 call"))?;
        let (per, unit) = match unit.trim() {
            "s" | "sec" | "second" => (Duration::from_secs(1), "s"),
            "min" | "minute" => (Duration::from_secs(60), "min"),
            "h" | "hour" => (Duration::from_secs(3600), "hour"),
            "d" | "day" => (DAY, "day"),
            _ => return Err(bad()),
        };
        Ok(Rate { calls, per, unit })
    }

    /// The time one call's token takes to come back (GCRA's emission interval `T`).
    pub fn replenish(self) -> Duration {
        self.per / self.calls.get()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.calls, self.unit)
    }
}

/// A checked `[[limit]]` entry.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Unique id (shared namespace with rules).
    pub id: RuleId,
    /// `file:line`, for explanations.
    pub location: String,
    /// Exposed-name globs (`None` = any tool).
    pub tools: Option<ToolGlobs>,
    /// Exact principals (`None` = anyone).
    pub principals: Option<Vec<String>>,
    /// The caller must be in one of these groups (`None` = no condition).
    pub groups: Option<Vec<String>>,
    /// Sustained rate per caller.
    pub rate: Rate,
    /// Calls a caller may make at once before the rate applies (default: the rate's count).
    pub burst: NonZeroU32,
}

impl Limit {
    /// True when this limit counts a call of `tool` by `principal` in `groups`.
    pub fn applies(&self, tool: &str, principal: &str, groups: &[String]) -> bool {
        self.tools.as_ref().is_none_or(|t| t.is_match(tool))
            && self.principals.as_ref().is_none_or(|p| p.iter().any(|p| p == principal))
            && self.groups.as_ref().is_none_or(|g| g.iter().any(|g| groups.contains(g)))
    }
}

/// A call refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The limit that refused it.
    pub limit: RuleId,
    /// Its rate, for the message.
    pub rate: Rate,
    /// Its burst, for the message.
    pub burst: NonZeroU32,
    /// When the caller may try again.
    pub retry_after: Duration,
}

impl Limited {
    /// One sentence for the caller and the log.
    pub fn reason(&self) -> String {
        format!(
            "rate limit \"{}\" ({}, burst {}) reached; retry after {} s",
            self.limit,
            self.rate,
            self.burst,
            self.retry_after.as_secs_f64().ceil().max(1.0) as u64
        )
    }
}

impl Limit {
    /// How far ahead of now a bucket's theoretical arrival time may be and still admit a
    /// call (GCRA's `tau`): `burst - 1` emission intervals, as `governor` counts it.
    pub fn tolerance(&self) -> Duration {
        self.rate.replenish() * (self.burst.get() - 1)
    }

    /// The limit's quota as written, e.g. `30/min burst 5`: buckets are kept per limit id
    /// and quota, so a reload that changes a limit's rate or burst starts it afresh.
    pub fn quota(&self) -> String {
        format!("{} burst {}", self.rate, self.burst)
    }
}

/// What a bucket said to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A token was taken: the call may go on.
    Admitted,
    /// The bucket is empty until `retry_after` from now.
    Empty { retry_after: Duration },
}

/// A backend that could not count (the database is away): the call must be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the rate-limit counters are unavailable: {0}")]
pub struct CountersUnavailable(pub String);

/// Where the buckets of a limit set live: the one interface the limiter counts through.
pub trait Counters: Send + Sync + 'static {
    /// Takes one token from `principal`'s bucket of `limit`, the `at`-th limit of the set
    /// the counters were made for, atomically (however many gateways count in it).
    fn take<'a>(&'a self, at: usize, limit: &'a Limit, principal: &'a str) -> BoxFuture<'a, Result<Taken, CountersUnavailable>>;
}

/// Where limits count, chosen once at start and kept across reloads.
#[derive(Clone, Default)]
pub enum LimitBackend {
    /// `governor` buckets in this gateway's memory, fresh for every policy set.
    #[default]
    Memory,
    /// Counters shared with other gateways (PostgreSQL), kept per limit id and quota.
    Shared(Arc<dyn Counters>),
}

impl fmt::Debug for LimitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitBackend::Memory => "Memory",
            LimitBackend::Shared(_) => "Shared",
        })
    }
}

impl LimitBackend {
    /// The limiter of a policy set's limits (at start, and after each reload).
    pub fn limiter(&self, limits: &[Limit]) -> Limiter {
        let counters: Arc<dyn Counters> = match self {
            LimitBackend::Memory => Arc::new(Governors::new(limits)),
            LimitBackend::Shared(shared) => shared.clone(),
        };
        Limiter { limits: limits.to_vec(), counters }
    }
}

/// Why a call was refused by the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A bucket was empty.
    Limited(Limited),
    /// A limit applied but could not be counted; refused rather than let through unlimited.
    Uncounted { limit: RuleId, why: CountersUnavailable },
}

impl Refused {
    /// The limit that refused the call.
    pub fn limit(&self) -> &RuleId {
        match self {
            Refused::Limited(limited) => &limited.limit,
            Refused::Uncounted { limit, .. } => limit,
        }
    }

    /// One sentence for the caller and the log.
    pub fn reason(&self) -> String {
        match self {
            Refused::Limited(limited) => limited.reason(),
            Refused::Uncounted { limit, why } => format!("rate limit \"{limit}\" could not be checked ({why}); retry later"),
        }
    }
}

/// The limits of one policy set and the counters they count in.
pub struct Limiter {
    limits: Vec<Limit>,
    counters: Arc<dyn Counters>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("limits", &self.limits.len()).finish()
    }
}

impl Limiter {
    /// Full in-memory buckets for every limit.
    pub fn new(limits: &[Limit]) -> Limiter {
        LimitBackend::Memory.limiter(limits)
    }

    /// The limits that count a call of `tool` by `principal`.
    pub fn applying<'a>(&'a self, tool: &'a str, principal: &'a str, groups: &'a [String]) -> impl Iterator<Item = &'a Limit> {
        self.limits.iter().filter(move |l| l.applies(tool, principal, groups))
    }

    /// Counts one call against every limit that applies, in order; refuses it at the
    /// first limit whose caller's bucket is empty, or that cannot be counted. A call no
    /// limit applies to costs nothing (no backend is asked).
    pub async fn check(&self, tool: &str, principal: &str, groups: &[String]) -> Result<(), Refused> {
        for (at, limit) in self.limits.iter().enumerate() {
            if !limit.applies(tool, principal, groups) {
                continue;
            }
            match self.counters.take(at, limit, principal).await {
                Ok(Taken::Admitted) => {}
                Ok(Taken::Empty { retry_after }) => {
                    return Err(Refused::Limited(Limited {
                        limit: limit.id.clone(),
                        rate: limit.rate,
                        burst: limit.burst,
                        retry_after,
                    }));
                }
                Err(why) => return Err(Refused::Uncounted { limit: limit.id.clone(), why }),
            }
        }
        Ok(())
    }
}

/// The in-memory backend: one `governor` keyed limiter per limit of the set.
struct Governors {
    buckets: Vec<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl Governors {
    fn new(limits: &[Limit]) -> Governors {
        let buckets = limits
            .iter()
            .map(|limit| {
                // `with_period` only fails on a zero period, which `Rate::parse` rules out;
                // fall back to one call a second rather than no limit at all.
                let quota = Quota::with_period(limit.rate.replenish())
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(limit.burst);
                RateLimiter::keyed(quota)
            })
            .collect();
        Governors { buckets, clock: DefaultClock::default() }
    }

    fn take_now(&self, at: usize, principal: &str) -> Result<Taken, CountersUnavailable> {
        let bucket = self.buckets.get(at).ok_or_else(|| CountersUnavailable(format!("no bucket for limit {at}")))?;
        Ok(match bucket.check_key(&principal.to_owned()) {
            Ok(()) => Taken::Admitted,
            Err(not_until) => Taken::Empty { retry_after: not_until.wait_time_from(self.clock.now()) },
        })
    }
}

impl Counters for Governors {
    fn take<'a>(&'a self, at: usize, _limit: &'a Limit, principal: &'a str) -> BoxFuture<'a, Result<Taken, CountersUnavailable>> {
        futures::future::ready(self.take_now(at, principal)).boxed()
    }
}

// ---- raw, as written -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    id: Option<Spanned<String>>,
    tools: Option<Spanned<Vec<String>>>,
    principals: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
    rate: Option<Spanned<String>>,
    burst: Option<Spanned<i64>>,
}

/// Highest accepted `burst`: more is certainly a typo.
const MAX_BURST: i64 = 1_000_000;

/// Checks one `[[limit]]` entry, reporting every problem at its line.
pub(super) fn check(raw: Spanned<RawLimit>, source: &Source<'_>, errors: &mut ConfigErrors) -> Option<Limit> {
    let span = raw.span();
    let location = format!("{}:{}", source.file().display(), source.line_of(span.start));
    let raw = raw.into_inner();
    let before = errors.problems().len();
    let name = raw.id.as_ref().map(|i| i.get_ref().clone()).unwrap_or_default();
    let mut push = |at: std::ops::Range<usize>, message: String| {
        let text = if name.is_empty() { format!("limit: {message}") } else { format!("limit \"{name}\": {message}") };
        errors.push(source.problem(Some(at), text));
    };
    let id = match &raw.id {
        Some(i) => RuleId::new(i.get_ref()).or_else(|| {
            push(i.span(), "key \"id\" must not be empty".into());
            None
        }),
        None => {
            push(span.clone(), "needs an \"id\"".into());
            None
        }
    };
    let rate = match &raw.rate {
        Some(r) => Rate::parse(r.get_ref()).map_err(|why| push(r.span(), format!("key \"rate\": {why}"))).ok(),
        None => {
            push(span.clone(), "needs a \"rate\", e.g. rate = \"30/min\"".into());
            None
        }
    };
    let burst = match &raw.burst {
        Some(b) if (1..=MAX_BURST).contains(b.get_ref()) => u32::try_from(*b.get_ref()).ok().and_then(NonZeroU32::new),
        Some(b) => {
            push(b.span(), format!("key \"burst\" must be between 1 and {MAX_BURST}"));
            None
        }
        None => rate.map(|r| r.calls),
    };
    let mut list = |value: &Option<Spanned<Vec<String>>>, key: &str| -> Option<Vec<String>> {
        let value = value.as_ref()?;
        if value.get_ref().is_empty() {
            push(value.span(), format!("key \"{key}\" is empty, so the limit could never apply; omit it to apply to any"));
            return None;
        }
        Some(value.get_ref().clone())
    };
    let principals = list(&raw.principals, "principals");
    let groups = list(&raw.groups, "groups");
    let patterns = list(&raw.tools, "tools");
    let tools = match (patterns, &raw.tools) {
        (Some(p), Some(at)) => ToolGlobs::new(&p).map_err(|why| push(at.span(), format!("key \"tools\": {why}"))).ok(),
        _ => None,
    };
    if errors.problems().len() != before {
        return None;
    }
    Some(Limit { id: id?, location, tools, principals, groups, rate: rate?, burst: burst? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: &str, burst: u32) -> Limit {
        Limit {
            id: RuleId::new("l").expect("id"),
            location: "test:1".into(),
            tools: Some(ToolGlobs::new(&["demo__*".into()]).expect("glob")),
            principals: None,
            groups: Some(vec!["agents".into()]),
            rate: Rate::parse(rate).expect("rate"),
            burst: NonZeroU32::new(burst).expect("burst"),
        }
    }

    #[test]
    fn rates_parse_in_every_unit_and_refuse_nonsense() {
        assert_eq!(Rate::parse("30/min").map(|r| r.replenish()), Ok(Duration::from_secs(2)));
        assert_eq!(Rate::parse("2/s").map(|r| r.replenish()), Ok(Duration::from_millis(500)));
        assert_eq!(Rate::parse("1000/day").map(|r| r.to_string()), Ok("1000/day".to_owned()));
        assert_eq!(Rate::parse("1 / hour").map(|r| r.replenish()), Ok(Duration::from_secs(3600)));
        for bad in ["", "30", "0/min", "-1/min", "30/week", "x/min", "30/"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[tokio::test]
    async fn a_caller_gets_the_burst_then_is_refused_with_a_retry_time() {
        let limiter = Limiter::new(&[limit("1/hour", 2)]);
        let agents = vec!["agents".to_owned()];
        assert!(limiter.check("demo__x", "a", &agents).await.is_ok());
        assert!(limiter.check("demo__x", "a", &agents).await.is_ok());
        let Err(Refused::Limited(refused)) = limiter.check("demo__x", "a", &agents).await else { panic!("third call passed") };
        assert!(refused.retry_after > Duration::from_secs(3000), "{refused:?}");
        assert!(refused.reason().contains("rate limit \"l\" (1/hour, burst 2)"), "{}", refused.reason());
        // Another caller has a bucket of its own; other tools and groups are not counted.
        assert!(limiter.check("demo__x", "b", &agents).await.is_ok());
        assert!(limiter.check("fs__x", "a", &agents).await.is_ok());
        assert!(limiter.check("demo__x", "a", &[]).await.is_ok());
    }

    #[test]
    fn the_tolerance_is_burst_minus_one_intervals_and_the_quota_names_rate_and_burst() {
        assert_eq!(limit("1/hour", 2).tolerance(), Duration::from_secs(3600));
        assert_eq!(limit("30/min", 1).tolerance(), Duration::ZERO);
        assert_eq!(limit("30/min", 5).quota(), "30/min burst 5");
    }
}
