-- Nothing for PostgreSQL: migrations/sqlite/0012 counts SQLite's batch items
-- by status in a table kept per statement and narrows batch_items_by_status
-- to a partial index. PostgreSQL still counts through its full
-- batch_items_by_status (same counts, its speed not measured for this); the
-- version is kept so both engines list the same migrations.
SELECT 1;
