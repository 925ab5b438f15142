-- Every payment and batch is owned by one tenant (the caller's API key).
-- Idempotency keys and batch ids are the tenant's own: two tenants may use
-- the same one. Rows from before tenants belong to the dev tenant.
-- Tables are rebuilt (SQLite cannot change a UNIQUE constraint in place);
-- the migration runs with foreign keys off and checks them before COMMIT.

CREATE TABLE payments_v3 (
    payment_id       TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    payer            TEXT NOT NULL,
    mode             TEXT NOT NULL,
    status           TEXT NOT NULL,
    metadata_json    TEXT NOT NULL,
    failure_reason   TEXT,
    failure_message  TEXT,
    failure_decline_code TEXT,
    received_at_us   INTEGER NOT NULL,
    completed_at_us  INTEGER,
    UNIQUE (tenant_id, idempotency_key)
) STRICT;
INSERT INTO payments_v3 SELECT payment_id, 'dev', idempotency_key, fingerprint, payer, mode,
    status, metadata_json, failure_reason, failure_message, failure_decline_code,
    received_at_us, completed_at_us FROM payments;
DROP TABLE payments;
ALTER TABLE payments_v3 RENAME TO payments;
CREATE INDEX payments_by_tenant ON payments (tenant_id, received_at_us DESC, payment_id DESC);
CREATE INDEX payments_processing ON payments (status) WHERE status = 'PROCESSING';

-- A batch is found by (tenant_id, batch_id); its items and groups hang off
-- the server-made uid, which is unique forever.
CREATE TABLE batches_v3 (
    uid                 TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    batch_id            TEXT NOT NULL,
    payer               TEXT NOT NULL,
    grouping            TEXT NOT NULL,
    max_group_size      INTEGER NOT NULL,
    parallelism         INTEGER NOT NULL,
    fingerprint         TEXT NOT NULL,
    status              TEXT NOT NULL,
    submissions         INTEGER NOT NULL,
    unstored_rejections INTEGER NOT NULL DEFAULT 0,
    created_at_us       INTEGER NOT NULL,
    completed_at_us     INTEGER,
    wall_us_before      INTEGER NOT NULL DEFAULT 0,
    submission_started_at_us INTEGER NOT NULL,
    UNIQUE (tenant_id, batch_id)
) STRICT;
INSERT INTO batches_v3 SELECT uid, 'dev', batch_id, payer, grouping, max_group_size, parallelism,
    fingerprint, status, submissions, unstored_rejections, created_at_us, completed_at_us,
    wall_us_before, submission_started_at_us FROM batches;

CREATE TABLE batch_items_v3 (
    batch_uid         TEXT NOT NULL REFERENCES batches (uid),
    seq               INTEGER NOT NULL,
    reference         TEXT NOT NULL,
    payee             TEXT NOT NULL,
    currency          TEXT NOT NULL,
    amount_minor      INTEGER NOT NULL,
    requested_channel TEXT NOT NULL,
    requested_at_us   INTEGER,
    channel           TEXT NOT NULL,
    content_digest    TEXT NOT NULL,
    submission        INTEGER NOT NULL,
    status            TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    group_no          INTEGER NOT NULL,
    channel_reference TEXT NOT NULL,
    failure_reason    TEXT,
    failure_message   TEXT,
    failure_decline_code TEXT,
    PRIMARY KEY (batch_uid, seq),
    UNIQUE (batch_uid, reference),
    CHECK (status = 'REJECTED' OR amount_minor > 0)
) STRICT;
INSERT INTO batch_items_v3 SELECT b.uid, i.seq, i.reference, i.payee, i.currency,
    i.amount_minor, i.requested_channel, i.requested_at_us, i.channel, i.content_digest,
    i.submission, i.status, i.attempt, i.group_no, i.channel_reference, i.failure_reason,
    i.failure_message, i.failure_decline_code
    FROM batch_items i JOIN batches b ON b.batch_id = i.batch_id;

CREATE TABLE batch_groups_v3 (
    batch_uid       TEXT NOT NULL REFERENCES batches (uid),
    group_no        INTEGER NOT NULL,
    group_key       TEXT NOT NULL,
    size            INTEGER NOT NULL,
    started_at_us   INTEGER NOT NULL,
    completed_at_us INTEGER,
    PRIMARY KEY (batch_uid, group_no)
) STRICT;
INSERT INTO batch_groups_v3 SELECT b.uid, g.group_no, g.group_key, g.size, g.started_at_us,
    g.completed_at_us FROM batch_groups g JOIN batches b ON b.batch_id = g.batch_id;

DROP TABLE batch_items;
DROP TABLE batch_groups;
DROP TABLE batches;
ALTER TABLE batches_v3 RENAME TO batches;
ALTER TABLE batch_items_v3 RENAME TO batch_items;
ALTER TABLE batch_groups_v3 RENAME TO batch_groups;
CREATE INDEX batch_items_by_status ON batch_items (batch_uid, status, seq);
