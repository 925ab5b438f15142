-- Nothing for PostgreSQL: its group leases came with 0005. SQLite's 0010
-- adds the same columns for workers sharing one file; the version is kept so
-- both engines list the same migrations.
SELECT 1;
