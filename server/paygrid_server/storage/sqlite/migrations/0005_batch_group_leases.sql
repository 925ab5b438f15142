-- Nothing for SQLite: one server process opens the file, so batch groups are
-- claimed in memory (domain/single_process_group_queue.py), not leased in the
-- database as PostgreSQL's replicas do (migrations/postgres/0005). The version
-- is kept so both engines list the same migrations.
SELECT 1;
