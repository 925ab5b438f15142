-- Nothing for PostgreSQL yet: migrations/sqlite/0013 drops SQLite's
-- batch_items.content_digest (an item resent on resubmission is now compared
-- with the first one by its columns: storage/batch_item_ingest.py).
-- PostgreSQL keeps the column, still written and no longer read, because
-- replicas of the release before this one compare it when an item is resent,
-- and a rolling update runs them beside this one; a later release drops it.
-- The version is kept so both engines list the same migrations.
SELECT 1;
