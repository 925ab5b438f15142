-- An item's version: the batch's aggregate_version of the event that last
-- reported it (its own batch.item.failed / batch.item.unknown event, else its
-- group's batch.group.completed); 0 until its group completed. ListBatchItems
-- returns it, so items and events share one ordering token.
ALTER TABLE batch_items ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

-- A group's items as stored, for a group reported again (a resubmission
-- settled some of them): PostgreSQL has this index since 0005.
CREATE INDEX batch_items_by_group ON batch_items (batch_uid, group_no, seq);
