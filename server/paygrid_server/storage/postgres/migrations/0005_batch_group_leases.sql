-- Batch groups as durable work units any replica may claim: QUEUED when
-- formed, LEASED by one replica (lease_owner) until lease_expires_at_us
-- (renewed while it charges), DONE with its results. lease_count counts
-- claims: it is the fencing token (a replica may store a group's results
-- only while the count is still the one its claim made). processed_by: the
-- replica that stored the results.
-- A batch's submission is leased the same way (one stream at a time, in
-- whichever replica), and stopped_after holds why a STOP_ON_FIRST_FAILURE
-- batch stopped, for every replica's workers to see.
-- PostgreSQL only: SQLite (one server process) claims groups in memory
-- (domain/single_process_group_queue.py; migrations/sqlite/0005 is empty).
ALTER TABLE batch_groups ADD COLUMN status TEXT NOT NULL DEFAULT 'DONE';
ALTER TABLE batch_groups ADD COLUMN lease_owner TEXT;
ALTER TABLE batch_groups ADD COLUMN lease_expires_at_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batch_groups ADD COLUMN lease_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batch_groups ADD COLUMN processed_by TEXT;
-- A group a stopped server left unfinished is claimed again: settled with
-- its channel first (lease_count > 1 says it was taken over).
UPDATE batch_groups SET status = 'QUEUED', lease_count = 1 WHERE completed_at_us IS NULL;
CREATE INDEX batch_groups_unfinished ON batch_groups (batch_uid, group_no) WHERE status <> 'DONE';
CREATE INDEX batch_items_by_group ON batch_items (batch_uid, group_no, seq);

ALTER TABLE batches ADD COLUMN submission_owner TEXT;
ALTER TABLE batches ADD COLUMN submission_lease_expires_at_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN stopped_after TEXT;

-- Replicas seen claiming groups lately (at each claim, and every claim poll
-- while idle): a batch's parallelism is shared among the live ones, each
-- taking at most its share, so one replica cannot keep every lease.
CREATE TABLE batch_replicas (
    owner      TEXT PRIMARY KEY,
    seen_at_us BIGINT NOT NULL
);
