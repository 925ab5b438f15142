-- Nothing for PostgreSQL: migrations/sqlite/0011 makes SQLite's
-- batch_items_by_group partial (items without a group are left out).
-- PostgreSQL's durable queue sets group_no when a group is queued and was not
-- measured with a partial index; the version is kept so both engines list
-- the same migrations.
SELECT 1;
