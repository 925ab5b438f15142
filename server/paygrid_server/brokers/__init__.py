"""Brokers the event relay publishes to (domain/ports/event_relay.py)."""
