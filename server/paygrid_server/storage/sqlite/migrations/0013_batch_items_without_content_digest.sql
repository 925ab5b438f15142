-- An item resent on resubmission is compared with the first one by its
-- columns (payee, currency, amount_minor, requested_channel,
-- requested_at_us: storage/batch_item_ingest.py), not by a sha256 of them
-- stored beside them. The digest was a third of an item's row (64 of about
-- 200 bytes) and a hash for every item of every batch (on SQLite, on the
-- writer's thread): without it, side by side, 100k items in groups of 500
-- cost a SQLite server 0.897x the CPU an item and ran 1.088x the items/s,
-- every round (docs/performance.md, "Session 13").
ALTER TABLE batch_items DROP COLUMN content_digest;
