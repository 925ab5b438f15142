"""Reading the event log (the stores write it, in each change's transaction)."""

from paygrid_server.domain.events.event_queries import EventQueries

__all__ = ["EventQueries"]
