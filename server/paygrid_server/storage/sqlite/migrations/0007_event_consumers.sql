-- Named consumers' positions in the event log: a cumulative cursor per
-- (tenant, name), saved by AckEvents, so a consumer without a broker resumes
-- where it left off. The RabbitMQ relay keeps its own position here too, as
-- tenant '' (no API key maps to an empty tenant) and name 'relay:rabbitmq':
-- retention never deletes an event past the smallest cursor in this table.
CREATE TABLE event_consumers (
    tenant_id      TEXT NOT NULL,
    name           TEXT NOT NULL,
    cursor         INTEGER NOT NULL CHECK (cursor >= 0),
    updated_at_us  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

-- Retention's high-water mark: every event with seq <= pruned_through_seq
-- may be gone, so a cursor below it is expired (OUT_OF_RANGE). One row.
CREATE TABLE event_retention (
    singleton           INTEGER PRIMARY KEY CHECK (singleton = 1),
    pruned_through_seq  INTEGER NOT NULL CHECK (pruned_through_seq >= 0)
) STRICT;
INSERT INTO event_retention VALUES (1, 0);
