-- Batch groups as durable work units for `serve --workers N` on SQLite: the
-- same columns as PostgreSQL's 0005 (see migrations/postgres/0005 for what
-- each means). Workers sharing the file claim groups under a lease
-- (storage/sqlite/group_queue.py); a lone server keeps its groups in memory
-- (storage/single_process_group_queue.py), and its group rows keep the
-- default status DONE (what the durable queue makes of a lone server's
-- unfinished groups: SqliteGroupQueue.acquire_submission).
ALTER TABLE batch_groups ADD COLUMN status TEXT NOT NULL DEFAULT 'DONE';
ALTER TABLE batch_groups ADD COLUMN lease_owner TEXT;
ALTER TABLE batch_groups ADD COLUMN lease_expires_at_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batch_groups ADD COLUMN lease_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batch_groups ADD COLUMN processed_by TEXT;
CREATE INDEX batch_groups_unfinished ON batch_groups (batch_uid, group_no) WHERE status <> 'DONE';

ALTER TABLE batches ADD COLUMN submission_owner TEXT;
ALTER TABLE batches ADD COLUMN submission_lease_expires_at_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN stopped_after TEXT;

-- Workers seen claiming groups lately: a batch's parallelism is shared among
-- the live ones (as between PostgreSQL replicas).
CREATE TABLE batch_replicas (
    owner      TEXT PRIMARY KEY,
    seen_at_us INTEGER NOT NULL
) STRICT;
