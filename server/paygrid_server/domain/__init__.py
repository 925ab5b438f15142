"""The domain: what paygrid does, with no gRPC, SQL or sockets in it.

model/ (plain data and rules) <- ports/ (interfaces the domain needs) <- charging/
(one leg or group on one channel) <- payments/ and batches/ (the use cases).
in_flight.py and payments_first.py sit beside the use cases, which both use them.
Arrows point the way imports go; nothing in domain/ imports transport/, storage/
or channels/: they implement the ports, and app.py wires them together.
"""
