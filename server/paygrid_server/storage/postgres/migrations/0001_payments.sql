-- Payments, their legs, every channel a charge was sent to, and refunds.
-- The same schema as migrations/sqlite/0001_payments.sql. Amounts are
-- BIGINT minor units; times are BIGINT microseconds (Unix).

CREATE TABLE payments (
    payment_id       TEXT PRIMARY KEY,
    idempotency_key  TEXT NOT NULL UNIQUE,
    fingerprint      TEXT NOT NULL,
    payer            TEXT NOT NULL,
    mode             TEXT NOT NULL,
    status           TEXT NOT NULL,
    metadata_json    TEXT NOT NULL,
    failure_reason   TEXT,
    failure_message  TEXT,
    failure_decline_code TEXT,
    received_at_us   BIGINT NOT NULL,
    completed_at_us  BIGINT
);

CREATE INDEX payments_by_received ON payments (received_at_us DESC, payment_id DESC);
CREATE INDEX payments_processing ON payments (status) WHERE status = 'PROCESSING';

CREATE TABLE payment_legs (
    payment_id        TEXT NOT NULL REFERENCES payments (payment_id),
    leg_index         INTEGER NOT NULL,
    payee             TEXT NOT NULL,
    currency          TEXT NOT NULL,
    amount_minor      BIGINT NOT NULL CHECK (amount_minor > 0),
    requested_channel TEXT NOT NULL,
    reference         TEXT NOT NULL,
    status            TEXT NOT NULL,
    channel           TEXT NOT NULL,
    channel_reference TEXT NOT NULL,
    failure_reason    TEXT,
    failure_message   TEXT,
    failure_decline_code TEXT,
    attempts          INTEGER NOT NULL,
    latency_us        BIGINT NOT NULL,
    refunded_minor       BIGINT NOT NULL DEFAULT 0,
    refund_pending_minor BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (payment_id, leg_index),
    -- The last line of defence against over-refunding, whichever replica writes.
    CHECK (refunded_minor >= 0 AND refund_pending_minor >= 0
           AND refunded_minor + refund_pending_minor <= amount_minor)
);

CREATE TABLE charge_attempts (
    payment_id    TEXT NOT NULL,
    leg_index     INTEGER NOT NULL,
    channel       TEXT NOT NULL,
    attempt_no    INTEGER NOT NULL,
    started_at_us BIGINT NOT NULL,
    PRIMARY KEY (payment_id, leg_index, channel),
    FOREIGN KEY (payment_id, leg_index) REFERENCES payment_legs (payment_id, leg_index)
);

CREATE TABLE refunds (
    refund_id       TEXT PRIMARY KEY,
    payment_id      TEXT NOT NULL REFERENCES payments (payment_id),
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    UNIQUE (payment_id, idempotency_key)
);

CREATE INDEX refunds_pending ON refunds (status) WHERE status = 'PENDING';

CREATE TABLE refund_legs (
    refund_id         TEXT NOT NULL REFERENCES refunds (refund_id),
    leg_index         INTEGER NOT NULL,
    currency          TEXT NOT NULL,
    amount_minor      BIGINT NOT NULL CHECK (amount_minor > 0),
    channel           TEXT NOT NULL,
    status            TEXT NOT NULL,
    channel_reference TEXT NOT NULL,
    failure_reason    TEXT,
    failure_message   TEXT,
    PRIMARY KEY (refund_id, leg_index)
);
