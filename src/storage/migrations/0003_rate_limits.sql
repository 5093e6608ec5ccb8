-- Rate-limit buckets shared by the replicas (src/policy/limit/postgres.rs).
-- One row per limit, quota and caller, holding GCRA's theoretical arrival time (`tat`);
-- every check is one INSERT ... ON CONFLICT DO UPDATE that reads and moves it on under the
-- row's lock, with the database's clock_timestamp(), so replicas never over-admit and
-- their clocks do not matter. `checked_at` and `admitted` are that check's time and
-- verdict, which the statement returns. A row whose tat has passed is a full bucket, the
-- same as no row: the replicas delete those every minute.
-- `quota` is the limit's rate and burst as written ("30/min burst 5"): a reload that
-- changes them starts fresh buckets, and the old rows expire.
CREATE TABLE rate_limits (
    limit_id text NOT NULL,
    quota text NOT NULL,
    principal text NOT NULL,
    tat timestamptz NOT NULL,
    checked_at timestamptz NOT NULL,
    admitted boolean NOT NULL,
    PRIMARY KEY (limit_id, quota, principal)
);
