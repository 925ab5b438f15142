-- Every payment and batch is owned by one tenant (the caller's API key).
-- Idempotency keys and batch ids are the tenant's own: two tenants may use
-- the same one. Rows from before tenants belong to the dev tenant.
-- The same result as migrations/sqlite/0003_tenants.sql; PostgreSQL changes
-- constraints in place where SQLite has to rebuild tables.

ALTER TABLE payments ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'dev';
ALTER TABLE payments ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE payments DROP CONSTRAINT payments_idempotency_key_key;
ALTER TABLE payments ADD CONSTRAINT payments_tenant_id_idempotency_key_key
    UNIQUE (tenant_id, idempotency_key);
DROP INDEX payments_by_received;
CREATE INDEX payments_by_tenant ON payments (tenant_id, received_at_us DESC, payment_id DESC);

-- A batch is found by (tenant_id, batch_id); its items and groups hang off
-- the server-made uid, which is unique forever.
ALTER TABLE batches ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'dev';
ALTER TABLE batches ALTER COLUMN tenant_id DROP DEFAULT;

ALTER TABLE batch_items ADD COLUMN batch_uid TEXT;
UPDATE batch_items i SET batch_uid = b.uid FROM batches b WHERE b.batch_id = i.batch_id;
ALTER TABLE batch_items ALTER COLUMN batch_uid SET NOT NULL;
-- Drops the primary key, the unique reference, the index and the foreign
-- key on batch_id with it.
ALTER TABLE batch_items DROP COLUMN batch_id;

ALTER TABLE batch_groups ADD COLUMN batch_uid TEXT;
UPDATE batch_groups g SET batch_uid = b.uid FROM batches b WHERE b.batch_id = g.batch_id;
ALTER TABLE batch_groups ALTER COLUMN batch_uid SET NOT NULL;
ALTER TABLE batch_groups DROP COLUMN batch_id;

ALTER TABLE batches DROP CONSTRAINT batches_pkey;
ALTER TABLE batches DROP CONSTRAINT batches_uid_key;
ALTER TABLE batches ADD PRIMARY KEY (uid);
ALTER TABLE batches ADD CONSTRAINT batches_tenant_id_batch_id_key UNIQUE (tenant_id, batch_id);

ALTER TABLE batch_items ADD PRIMARY KEY (batch_uid, seq);
ALTER TABLE batch_items ADD CONSTRAINT batch_items_batch_uid_reference_key
    UNIQUE (batch_uid, reference);
ALTER TABLE batch_items ADD FOREIGN KEY (batch_uid) REFERENCES batches (uid);
CREATE INDEX batch_items_by_status ON batch_items (batch_uid, status, seq);

ALTER TABLE batch_groups ADD PRIMARY KEY (batch_uid, group_no);
ALTER TABLE batch_groups ADD FOREIGN KEY (batch_uid) REFERENCES batches (uid);
