-- A batch's items are keyed by an integer the batch gets when it is stored
-- (batches.item_key), not by its uid: the uid (a 36-character text) was in
-- every item's row and in each of its index entries (by seq, by reference,
-- by group, by status), most of an entry's bytes. Statements find the key
-- from the uid in the statement itself (sqlite/batch_item_key.py), once per
-- statement. Side by side, 100k items in groups of 500: see
-- docs/performance.md, "Session 13".
ALTER TABLE batches ADD COLUMN item_key INTEGER;
UPDATE batches SET item_key = rowid;
CREATE UNIQUE INDEX batches_by_item_key ON batches (item_key);

CREATE TABLE batch_items_v14 (
    batch_key         INTEGER NOT NULL REFERENCES batches (item_key),
    seq               INTEGER NOT NULL,
    reference         TEXT NOT NULL,
    payee             TEXT NOT NULL,
    currency          TEXT NOT NULL,
    amount_minor      INTEGER NOT NULL,
    requested_channel TEXT NOT NULL,
    requested_at_us   INTEGER,
    channel           TEXT NOT NULL,
    submission        INTEGER NOT NULL,
    status            TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    group_no          INTEGER NOT NULL,
    channel_reference TEXT NOT NULL,
    failure_reason    TEXT,
    failure_message   TEXT,
    failure_decline_code TEXT,
    version           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_key, seq),
    UNIQUE (batch_key, reference),
    CHECK (status = 'REJECTED' OR amount_minor > 0)
) STRICT;
INSERT INTO batch_items_v14 SELECT b.item_key, i.seq, i.reference, i.payee, i.currency,
    i.amount_minor, i.requested_channel, i.requested_at_us, i.channel, i.submission, i.status,
    i.attempt, i.group_no, i.channel_reference, i.failure_reason, i.failure_message,
    i.failure_decline_code, i.version
    FROM batch_items i JOIN batches b ON b.uid = i.batch_uid;
DROP TABLE batch_items;
ALTER TABLE batch_items_v14 RENAME TO batch_items;
CREATE INDEX batch_items_by_group ON batch_items (batch_key, group_no, seq) WHERE group_no <> 0;
CREATE INDEX batch_items_by_status ON batch_items (batch_key, status, seq)
    WHERE status NOT IN ('RECEIVED', 'SUCCEEDED');

-- What reconciliation reads (ledger_reconciliation.py), the same on both
-- engines: each item's channel key parts (batch uid, seq, attempt) and charge.
CREATE VIEW batch_item_charges AS
    SELECT b.uid AS batch_uid, i.seq, i.attempt, i.status, i.channel, i.channel_reference,
           i.currency, i.amount_minor
    FROM batch_items i JOIN batches b ON b.item_key = i.batch_key;
