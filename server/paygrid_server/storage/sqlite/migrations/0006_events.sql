-- The event log (outbox): one row per state change, written in the
-- transaction that makes the change. seq is the cursor: SQLite has one
-- writer, so seq order is commit order and no smaller seq can appear later.
-- AUTOINCREMENT: a seq is never reused, even after the newest row is gone.
-- version on payments and batches is the last event's aggregate_version
-- (0: none yet).

ALTER TABLE payments ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id          TEXT NOT NULL UNIQUE,
    type              TEXT NOT NULL,
    tenant_id         TEXT NOT NULL,
    aggregate_type    TEXT NOT NULL,
    aggregate_id      TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL CHECK (aggregate_version > 0),
    payload_type      TEXT NOT NULL,
    payload           BLOB NOT NULL,
    occurred_at_us    INTEGER NOT NULL,
    UNIQUE (tenant_id, aggregate_type, aggregate_id, aggregate_version)
) STRICT;

CREATE INDEX events_by_tenant ON events (tenant_id, seq);
