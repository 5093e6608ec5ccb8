//! Rate-limit buckets in PostgreSQL (table `rate_limits`, migration 3), shared by every
//! replica.
//!
//! Owns: `PgCounters`: one atomic statement per check, and the sweep of expired rows.
//! Uses: `storage::PgPool`. Must not: decide or log anything (the pipeline records what
//! `Limiter::check` answers).
//!
//! The statement is GCRA as `governor` computes it, on the database's clock: with `T` the
//! emission interval and `tau = (burst - 1) * T`, a call at `now` is admitted when
//! `tat - tau <= now`, and then `tat` becomes `max(tat, now) + T`; a missing row is
//! `tat = now`. A refused call leaves `tat` as it was and may retry after
//! `tat - tau - now`. The row's lock (ON CONFLICT DO UPDATE) serialises concurrent checks
//! of one bucket on every replica, so none over-admits. A row whose `tat` has passed is a
//! full bucket, the same as no row; `sweep` deletes those every `SWEEP`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Counters, CountersUnavailable, Limit, Taken};
use crate::storage::PgPool;

/// How often each replica deletes the rows of full buckets.
const SWEEP: Duration = Duration::from_secs(60);

/// One check: `$1` limit id, `$2` quota, `$3` principal, `$4` T and `$5` tau in µs.
/// `checked_at` is the statement's one reading of the clock (EXCLUDED carries it into the
/// update, so both branches see the same `now`).
const TAKE: &str = "
INSERT INTO rate_limits AS r (limit_id, quota, principal, tat, checked_at, admitted)
SELECT $1, $2, $3, now.t + $4::bigint * interval '1 microsecond', now.t, true
  FROM (SELECT clock_timestamp() AS t) AS now
ON CONFLICT (limit_id, quota, principal) DO UPDATE SET
    admitted = r.tat - $5::bigint * interval '1 microsecond' <= EXCLUDED.checked_at,
    tat = CASE WHEN r.tat - $5::bigint * interval '1 microsecond' <= EXCLUDED.checked_at
               THEN greatest(r.tat, EXCLUDED.checked_at) + $4::bigint * interval '1 microsecond'
               ELSE r.tat END,
    checked_at = EXCLUDED.checked_at
RETURNING admitted,
    CASE WHEN admitted THEN 0
         ELSE (extract(epoch FROM r.tat - r.checked_at) * 1000000)::bigint - $5 END";

/// The PostgreSQL backend of the limiter. Every policy set of the gateway counts in it.
pub struct PgCounters {
    shared: Arc<PgPool>,
}

impl PgCounters {
    /// Counts in `pool`'s database (migrated), and sweeps it while the counters live.
    pub fn open(pool: PgPool) -> PgCounters {
        let shared = Arc::new(pool);
        tokio::spawn(sweep(Arc::downgrade(&shared)));
        PgCounters { shared }
    }

    async fn take_now(&self, limit: &Limit, principal: &str) -> Result<Taken, CountersUnavailable> {
        let unavailable = |e: &dyn std::fmt::Display| CountersUnavailable(e.to_string());
        let period = micros(limit.rate.replenish());
        let tolerance = micros(limit.tolerance());
        let client = self.shared.get().await.map_err(|e| unavailable(&e))?;
        let statement = client.prepare_cached(TAKE).await.map_err(|e| unavailable(&e))?;
        let row = client
            .query_one(&statement, &[&limit.id.as_str(), &limit.quota(), &principal, &period, &tolerance])
            .await
            .map_err(|e| unavailable(&e))?;
        let (admitted, wait): (bool, i64) = (row.get(0), row.get(1));
        Ok(if admitted {
            Taken::Admitted
        } else {
            Taken::Empty { retry_after: Duration::from_micros(u64::try_from(wait).unwrap_or(0)) }
        })
    }
}

impl Counters for PgCounters {
    fn take<'a>(&'a self, _at: usize, limit: &'a Limit, principal: &'a str) -> BoxFuture<'a, Result<Taken, CountersUnavailable>> {
        self.take_now(limit, principal).boxed()
    }
}

/// A duration in whole microseconds, for the statement (a day's burst of a million fits).
fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Deletes the rows of full buckets every `SWEEP` (any replica's sweep serves all). A
/// check racing the delete is safe: the delete re-reads a row it waited for and keeps it
/// if the check moved its `tat` on; a check after the delete starts a full bucket, which
/// is what the deleted row meant.
async fn sweep(pool: Weak<PgPool>) {
    loop {
        tokio::time::sleep(SWEEP).await;
        let Some(pool) = pool.upgrade() else { return };
        match sweep_once(&pool).await {
            Ok(rows) => tracing::debug!(rows, "swept full rate-limit buckets"),
            Err(error) => tracing::debug!(%error, "could not sweep the rate-limit buckets"),
        }
    }
}

/// Deletes the rows whose `tat` has passed; returns how many.
async fn sweep_once(pool: &PgPool) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client.execute("DELETE FROM rate_limits WHERE tat < clock_timestamp()", &[]).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::policy::{Rate, RuleId};

    /// A database of its own on the test server, or None after saying SKIPPED.
    async fn pool(test: &str) -> Option<String> {
        crate::storage::test_database(test).await
    }

    fn limit(rate: &str, burst: u32) -> Limit {
        Limit {
            id: RuleId::new("l").expect("id"),
            location: "test:1".into(),
            tools: None,
            principals: None,
            groups: None,
            rate: Rate::parse(rate).expect("rate"),
            burst: NonZeroU32::new(burst).expect("burst"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_replicas_checking_at_once_admit_exactly_the_burst() {
        let Some(url) = pool("pg_counters_race").await else { return };
        let replica = || PgPool::from_url(&url, "AIRLOCK_TEST_PG_URL", 8).expect("pool");
        replica().migrate().await.expect("migrate");
        let counters = [Arc::new(PgCounters::open(replica())), Arc::new(PgCounters::open(replica()))];
        let ten = Arc::new(limit("1/hour", 10));
        let checks: Vec<_> = (0..40)
            .map(|n| {
                let (counters, ten) = (counters[n % 2].clone(), ten.clone());
                tokio::spawn(async move { counters.take(0, &ten, "agent").await.expect("counted") })
            })
            .collect();
        let mut admitted = 0;
        for check in checks {
            match check.await.expect("join") {
                Taken::Admitted => admitted += 1,
                // As governor: the next token is one interval after the burst's first.
                Taken::Empty { retry_after } => assert!(retry_after > Duration::from_secs(3500) && retry_after <= Duration::from_secs(3600), "{retry_after:?}"),
            }
        }
        assert_eq!(admitted, 10, "concurrent checks over-admitted or under-admitted");
        // A changed quota (a reload) is a fresh bucket; another caller has its own.
        assert_eq!(counters[0].take(0, &limit("1/hour", 11), "agent").await, Ok(Taken::Admitted));
        assert_eq!(counters[1].take(0, &ten, "other").await, Ok(Taken::Admitted));
        // Full buckets (tat passed) are swept; the others stay.
        let pool = replica();
        let client = pool.get().await.expect("client");
        client.execute("UPDATE rate_limits SET tat = clock_timestamp() - interval '1 second' WHERE principal = 'other'", &[]).await.expect("age");
        assert_eq!(sweep_once(&pool).await, Ok(1));
        let left: i64 = client.query_one("SELECT count(*) FROM rate_limits", &[]).await.expect("count").get(0);
        assert_eq!(left, 2);
    }
}
