"""Metrics (Prometheus), traces (OpenTelemetry) and per-RPC log context.

Lives beside transport: its interceptors see gRPC calls; the domain knows
nothing of it. app.py wires it in through AppObservability.
"""
