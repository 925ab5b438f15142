-- Each batch's items counted by status in one row, kept by every statement
-- that stores or moves items, in its transaction (sqlite/batch_item_counts.py):
-- GetBatch and every batch status event read it instead of counting the
-- items through batch_items_by_status. That index took an entry at each
-- item's insert and moved it at its mark and at its result (~3 us of the
-- writer's ~13 us per item in the writer bench, 2026-12-04).
CREATE TABLE batch_item_counts (
    batch_uid  TEXT PRIMARY KEY REFERENCES batches (uid),
    received   INTEGER NOT NULL DEFAULT 0,
    processing INTEGER NOT NULL DEFAULT 0,
    succeeded  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    unknown    INTEGER NOT NULL DEFAULT 0,
    rejected   INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

INSERT INTO batch_item_counts
SELECT b.uid,
       count(i.status = 'RECEIVED' OR NULL), count(i.status = 'PROCESSING' OR NULL),
       count(i.status = 'SUCCEEDED' OR NULL), count(i.status = 'FAILED' OR NULL),
       count(i.status = 'UNKNOWN' OR NULL), count(i.status = 'REJECTED' OR NULL)
FROM batches b LEFT JOIN batch_items i ON i.batch_uid = b.uid
GROUP BY b.uid;

-- Items by status stay indexed only in the statuses an item of a batch that
-- goes well holds for a while or never: reading PROCESSING and UNKNOWN items
-- (a resubmission's settling) or FAILED ones (ListBatchItems) takes a range of
-- it. RECEIVED and SUCCEEDED items are read walking the batch by seq (they
-- are the many). A reader names this WHERE (SQLite uses a partial index only
-- for a query that implies it): sqlite/batch_store.py items_after.
DROP INDEX batch_items_by_status;
CREATE INDEX batch_items_by_status ON batch_items (batch_uid, status, seq)
    WHERE status NOT IN ('RECEIVED', 'SUCCEEDED');
