//! How long an aggregated list stays fresh, and who may cache it (SEP-2549 `ttlMs` and
//! `cacheScope`), from what each downstream said of its part.
//!
//! Owns: `CacheHints` (the rule for a list assembled from several downstreams' pages),
//! `Fetched` (a cached list's hints and when it was fetched), fetching every page of a
//! list with its hints.
//! Uses: rmcp's paginated results.
//! Must not: invent freshness a downstream never promised.
//!
//! Decisions:
//! - The shortest TTL of any part, and `private` when any part is: one user's answer must
//!   not be served to another. Once any part gives hints, a part without a TTL counts as 0.
//!   No part with hints (legacy downstreams): the list carries none either.
//! - A list Airlock keeps (the tool catalog, resource indexes) is served with what is left
//!   of its TTL, never the TTL it had when fetched; a downstream that gave a positive TTL
//!   is asked again once it ran out, so a client that re-lists gets a fresh list.

use std::future::Future;
use std::time::Instant;

use rmcp::model::CacheScope;

/// The hints of a list built from parts (pages, servers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheHints {
    hinted: u32,
    shortest: Option<u64>,
    untimed: bool,
    private: bool,
}

impl CacheHints {
    /// One more part, with what it said.
    pub fn add(&mut self, ttl_ms: Option<u64>, scope: Option<CacheScope>) {
        if ttl_ms.is_some() || scope.is_some() {
            self.hinted += 1;
        }
        match ttl_ms {
            Some(ttl) => self.shortest = Some(self.shortest.map_or(ttl, |s| s.min(ttl))),
            None => self.untimed = true,
        }
        self.private |= scope == Some(CacheScope::Private);
    }

    /// `(ttlMs, cacheScope)` of the whole list; none when no part gave hints.
    pub fn aggregate(&self) -> (Option<u64>, Option<CacheScope>) {
        if self.hinted == 0 {
            return (None, None);
        }
        let ttl = if self.untimed { 0 } else { self.shortest.unwrap_or(0) };
        let scope = if self.private { CacheScope::Private } else { CacheScope::Public };
        (Some(ttl), Some(scope))
    }
}

/// A kept list's hints, as of when it was fetched.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    hints: CacheHints,
    at: Instant,
}

impl Fetched {
    fn new(hints: CacheHints) -> Self {
        Self { hints, at: Instant::now() }
    }

    /// `(ttlMs, cacheScope)` now: the TTL less the time since the fetch.
    pub fn now(&self) -> (Option<u64>, Option<CacheScope>) {
        let (ttl, scope) = self.hints.aggregate();
        let elapsed = u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        (ttl.map(|ttl| ttl.saturating_sub(elapsed)), scope)
    }

    /// The downstream promised a freshness and it ran out: time to ask again. A list
    /// that never had a TTL is refreshed only when its server says it changed.
    pub fn ran_out(&self) -> bool {
        matches!(self.hints.aggregate(), (Some(ttl), _) if ttl > 0) && self.now().0 == Some(0)
    }
}

/// One page: its items, the next cursor, and its hints.
pub(super) struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
    pub ttl_ms: Option<u64>,
    pub cache_scope: Option<CacheScope>,
}

/// Every page of a list, and the hints of them all.
pub(super) async fn all_pages<T, E, F, Fut>(mut page: F) -> Result<(Vec<T>, Fetched), E>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, E>>,
{
    let mut items = Vec::new();
    let mut hints = CacheHints::default();
    let mut cursor = None;
    loop {
        let got = page(cursor).await?;
        hints.add(got.ttl_ms, got.cache_scope);
        items.extend(got.items);
        cursor = got.next_cursor;
        if cursor.is_none() {
            return Ok((items, Fetched::new(hints)));
        }
    }
}

/// Every page of the server's tools.
pub(super) async fn tools(
    peer: &rmcp::Peer<rmcp::RoleClient>,
) -> Result<(Vec<rmcp::model::Tool>, Fetched), rmcp::ServiceError> {
    all_pages(|cursor| async move {
        let page = peer.list_tools(Some(rmcp::model::PaginatedRequestParams::default().with_cursor(cursor))).await?;
        Ok(Page { items: page.tools, next_cursor: page.next_cursor, ttl_ms: page.ttl_ms, cache_scope: page.cache_scope })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::CacheHints;
    use rmcp::model::CacheScope::{self, Private, Public};

    #[test]
    fn an_aggregated_list_takes_the_shortest_ttl_and_any_private_scope() {
        let of = |pages: &[(Option<u64>, Option<CacheScope>)]| {
            let mut hints = CacheHints::default();
            for (ttl, scope) in pages {
                hints.add(*ttl, *scope);
            }
            hints.aggregate()
        };
        assert_eq!(of(&[]), (None, None));
        assert_eq!(of(&[(None, None), (None, None)]), (None, None), "legacy downstreams: no hints");
        assert_eq!(of(&[(Some(60_000), Some(Public)), (Some(5_000), Some(Public))]), (Some(5_000), Some(Public)));
        assert_eq!(of(&[(Some(60_000), Some(Public)), (Some(90_000), Some(Private))]), (Some(60_000), Some(Private)));
        assert_eq!(of(&[(Some(60_000), Some(Public)), (None, None)]), (Some(0), Some(Public)), "an untimed part is not cacheable");
    }

    #[test]
    fn a_kept_list_without_a_ttl_never_runs_out_and_one_with_zero_is_never_fresh() {
        let fetched = |ttl: Option<u64>| {
            let mut hints = CacheHints::default();
            hints.add(ttl, ttl.map(|_| Public));
            super::Fetched::new(hints)
        };
        assert!(!fetched(None).ran_out(), "refreshed on list_changed only");
        assert!(!fetched(Some(0)).ran_out(), "never promised anything: not refetched on every list");
        assert!(!fetched(Some(3_600_000)).ran_out());
        assert_eq!(fetched(Some(0)).now(), (Some(0), Some(Public)));
    }
}
