-- What a failed item does to the rest of its batch (CONTINUE,
-- STOP_ON_FIRST_FAILURE, ALL_OR_NOTHING_PER_GROUP); batches before it continued.
ALTER TABLE batches ADD COLUMN failure_policy TEXT NOT NULL DEFAULT 'CONTINUE';
