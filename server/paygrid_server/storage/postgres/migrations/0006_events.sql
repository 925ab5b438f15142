-- The event log (outbox): one row per state change, written in the
-- transaction that makes the change. `id` (BIGSERIAL) is taken at INSERT,
-- in insert order, not commit order: a slow transaction's id becomes visible
-- after larger ones, so a reader "after the last id" would skip it forever.
-- It is never exposed. `seq`, the cursor, is given after commit by the one
-- sequencer (postgres/event_sequencer.py, under an advisory lock) to rows
-- that have none: each run numbers only committed rows, above every seq
-- given before, so no smaller seq can appear after a reader saw a larger.
-- version on payments and batches is the last event's aggregate_version
-- (0: none yet).

ALTER TABLE payments ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE events (
    id                BIGSERIAL PRIMARY KEY,
    seq               BIGINT UNIQUE,
    event_id          TEXT NOT NULL UNIQUE,
    type              TEXT NOT NULL,
    tenant_id         TEXT NOT NULL,
    aggregate_type    TEXT NOT NULL,
    aggregate_id      TEXT NOT NULL,
    aggregate_version BIGINT NOT NULL CHECK (aggregate_version > 0),
    payload_type      TEXT NOT NULL,
    payload           BYTEA NOT NULL,
    occurred_at_us    BIGINT NOT NULL,
    UNIQUE (tenant_id, aggregate_type, aggregate_id, aggregate_version)
);

CREATE INDEX events_by_tenant ON events (tenant_id, seq) WHERE seq IS NOT NULL;
CREATE INDEX events_unsequenced ON events (id) WHERE seq IS NULL;
