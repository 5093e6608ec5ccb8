-- The audit log shared by the replicas (src/storage/audit_pg.rs).
-- The head row is the one row every append locks (SELECT ... FOR UPDATE): it serialises
-- the groups of all replicas. `state` is the writer state as the sled backend keeps it
-- (size, chain head, Merkle frontier, checkpoint count, key), NULL until the first group.
CREATE TABLE audit_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    size bigint NOT NULL,
    state bytea
);
INSERT INTO audit_head (id, size, state) VALUES (1, 0, NULL);

-- seq -> chain hash after the record (32 bytes) and its canonical bytes.
CREATE TABLE audit_records (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    chain bytea NOT NULL,
    record bytea NOT NULL
);

-- One signed checkpoint per group; group_id makes a retried group idempotent.
CREATE TABLE audit_checkpoints (
    idx bigint PRIMARY KEY CHECK (idx >= 0),
    first bigint NOT NULL,
    size bigint NOT NULL,
    group_id text UNIQUE,
    checkpoint bytea NOT NULL
);
