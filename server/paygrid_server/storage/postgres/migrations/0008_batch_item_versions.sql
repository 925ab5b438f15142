-- An item's version: the batch's aggregate_version of the event that last
-- reported it (its own batch.item.failed / batch.item.unknown event, else its
-- group's batch.group.completed); 0 until its group completed. ListBatchItems
-- returns it, so items and events share one ordering token.
ALTER TABLE batch_items ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
