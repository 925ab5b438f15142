"""Where the relay keeps its cursor, the same on every engine: its row in
event_consumers (migration 0007), beside the named consumers' cursors, so
retention never deletes an event the relay has not published."""

from __future__ import annotations

# No API key maps to the empty tenant: the row cannot clash with a consumer's.
RELAY_TENANT = ""
RELAY_NAME = "relay:rabbitmq"

LOAD_SQL = "SELECT cursor FROM event_consumers WHERE tenant_id = {0} AND name = {1}"
# Only forwards: a replica that lost the lead late cannot move its successor back.
SAVE_SQL = ("INSERT INTO event_consumers (tenant_id, name, cursor, updated_at_us) "
            "VALUES ({0}, {1}, {2}, {3}) ON CONFLICT (tenant_id, name) DO UPDATE "
            "SET cursor = excluded.cursor, updated_at_us = excluded.updated_at_us "
            "WHERE event_consumers.cursor < excluded.cursor")
