//! Rate limits: `[[limit]]` entries of the policy files, and the counters that enforce them.
//!
//! Owns: `Limit` (the checked entry), `Rate`, parsing `[[limit]]` with every problem at its
//! line, and `Limiter` (one keyed token bucket per limit, from `governor`).
//! Uses: `config` diagnostics, `rule::ToolGlobs`.
//! Must not: decide calls (that is `eval.rs`), write the audit log or hold calls; the
//! pipeline asks `Limiter::check` and records what it answers.
//!
//! A limit counts per caller: each principal has its own bucket of `burst` calls, refilled
//! at `rate`. Every matching limit counts a call; the first that has no token left refuses
//! it. The counters live in the gateway's memory, so they start full when it starts.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use toml::Spanned;

use super::rule::{RuleId, ToolGlobs};
use crate::config::{ConfigErrors, Source};

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

    /// The time one call's token takes to come back.
    fn replenish(self) -> Duration {
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

/// The counters for a set of limits. Cheap to check: no I/O, one short lock per limit.
pub struct Limiter {
    buckets: Vec<(Limit, DefaultKeyedRateLimiter<String>)>,
    clock: DefaultClock,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("limits", &self.buckets.len()).finish()
    }
}

impl Limiter {
    /// Full buckets for every limit.
    pub fn new(limits: &[Limit]) -> Limiter {
        let buckets = limits
            .iter()
            .map(|limit| {
                // `with_period` only fails on a zero period, which `Rate::parse` rules out;
                // fall back to one call a second rather than no limit at all.
                let quota = Quota::with_period(limit.rate.replenish())
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(limit.burst);
                (limit.clone(), RateLimiter::keyed(quota))
            })
            .collect();
        Limiter { buckets, clock: DefaultClock::default() }
    }

    /// The limits that count a call of `tool` by `principal`.
    pub fn applying<'a>(&'a self, tool: &'a str, principal: &'a str, groups: &'a [String]) -> impl Iterator<Item = &'a Limit> {
        self.buckets.iter().map(|(l, _)| l).filter(move |l| l.applies(tool, principal, groups))
    }

    /// Counts one call against every limit that applies; refuses it at the first limit
    /// whose caller's bucket is empty.
    pub fn check(&self, tool: &str, principal: &str, groups: &[String]) -> Result<(), Limited> {
        let key = principal.to_owned();
        for (limit, bucket) in &self.buckets {
            if !limit.applies(tool, principal, groups) {
                continue;
            }
            if let Err(not_until) = bucket.check_key(&key) {
                return Err(Limited {
                    limit: limit.id.clone(),
                    rate: limit.rate,
                    burst: limit.burst,
                    retry_after: not_until.wait_time_from(self.clock.now()),
                });
            }
        }
        Ok(())
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

    #[test]
    fn a_caller_gets_the_burst_then_is_refused_with_a_retry_time() {
        let limiter = Limiter::new(&[limit("1/hour", 2)]);
        let agents = vec!["agents".to_owned()];
        assert!(limiter.check("demo__x", "a", &agents).is_ok());
        assert!(limiter.check("demo__x", "a", &agents).is_ok());
        let refused = limiter.check("demo__x", "a", &agents).expect_err("third call passed");
        assert!(refused.retry_after > Duration::from_secs(3000), "{refused:?}");
        assert!(refused.reason().contains("rate limit \"l\" (1/hour, burst 2)"), "{}", refused.reason());
        // Another caller has a bucket of its own; other tools and groups are not counted.
        assert!(limiter.check("demo__x", "b", &agents).is_ok());
        assert!(limiter.check("fs__x", "a", &agents).is_ok());
        assert!(limiter.check("demo__x", "a", &[]).is_ok());
    }
}
