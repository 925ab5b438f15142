-- Batches, their items (stored as they arrive) and their groups.

CREATE TABLE batches (
    batch_id            TEXT PRIMARY KEY,
    uid                 TEXT NOT NULL UNIQUE,
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
    submission_started_at_us INTEGER NOT NULL
) STRICT;

CREATE TABLE batch_items (
    batch_id          TEXT NOT NULL REFERENCES batches (batch_id),
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
    PRIMARY KEY (batch_id, seq),
    UNIQUE (batch_id, reference),
    CHECK (status = 'REJECTED' OR amount_minor > 0)
) STRICT;

CREATE INDEX batch_items_by_status ON batch_items (batch_id, status, seq);

CREATE TABLE batch_groups (
    batch_id        TEXT NOT NULL REFERENCES batches (batch_id),
    group_no        INTEGER NOT NULL,
    group_key       TEXT NOT NULL,
    size            INTEGER NOT NULL,
    started_at_us   INTEGER NOT NULL,
    completed_at_us INTEGER,
    PRIMARY KEY (batch_id, group_no)
) STRICT;
