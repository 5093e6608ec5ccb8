-- Shared approvals, channel notes, tool fingerprints and replica leases
-- (src/approval/store/postgres.rs, src/gateway/fingerprints/postgres.rs).
-- Every change to approvals happens while its writer holds the approvals' advisory lock,
-- so `seq` (from approval_changes) grows in commit order: a replica catches up by reading
-- the rows whose seq is above the last one it saw.
CREATE SEQUENCE approval_changes;

-- body: the approval as the API shows it (JSON); state, holder and expires_ms repeat what
-- the lease reaper and operators query. version: optimistic concurrency (an UPDATE names
-- the version it read, and changes nothing if another writer moved it on).
CREATE TABLE approvals (
    id text PRIMARY KEY,
    state text NOT NULL,
    holder text,
    expires_ms bigint NOT NULL,
    body jsonb NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    seq bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX approvals_by_seq ON approvals (seq);
CREATE INDEX approvals_pending_by_holder ON approvals (holder) WHERE state = 'pending';

-- Each counted decision once per approver (the body carries them too, in order).
CREATE TABLE approval_votes (
    approval_id text NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
    approver text NOT NULL,
    verdict text NOT NULL,
    channel text NOT NULL,
    comment text,
    at_ms bigint NOT NULL,
    PRIMARY KEY (approval_id, approver)
);

-- Live holds (pending, or approved and unused) by what they are bound to, so a retry on
-- any replica re-attaches to the same approval.
CREATE TABLE approvals_live (
    binding text PRIMARY KEY,
    approval_id text NOT NULL REFERENCES approvals (id) ON DELETE CASCADE
);

-- What chat channels remember about a hold (where its Slack message is).
CREATE TABLE approval_notes (
    channel text NOT NULL,
    approval_id text NOT NULL,
    note jsonb NOT NULL,
    PRIMARY KEY (channel, approval_id)
);

-- One row per running replica; a replica whose heartbeat is older than the lease is gone,
-- and the holds it held are cancelled by whichever replica notices first.
CREATE TABLE gateway_leases (
    replica text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Accepted and last-seen tool fingerprints by exposed name (`v2:<hex>`, or bare version-1 hex).
CREATE TABLE tool_fingerprints (
    name text PRIMARY KEY,
    accepted text,
    seen text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
