"""Every Prometheus metric paygrid exposes, in one registry per app.

The registry is the app's own, not prometheus_client's global default: a
process (a test run) may hold several apps, each with its own figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Unary calls take milliseconds; a SubmitBatch stream can take many minutes.
SERVER_HANDLING_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
CHANNEL_CALL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                          2.5, 5.0, 10.0)
BATCH_APT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                       60.0)
BATCH_THROUGHPUT_BUCKETS = (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0,
                            10_000.0, 25_000.0, 50_000.0, 100_000.0)


class PaygridMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry

        # paygrid's own gRPC methods, health and reflection alike.
        self.server_handled = Counter(
            "paygrid_grpc_server_handled", "RPCs completed on the server, by final status code.",
            ("grpc_service", "grpc_method", "grpc_code"), registry=registry)
        self.server_handling_seconds = Histogram(
            "paygrid_grpc_server_handling_seconds",
            "Time from the start of an RPC to its final status, by status code.",
            ("grpc_service", "grpc_method", "grpc_code"), registry=registry,
            buckets=SERVER_HANDLING_BUCKETS_S)

        # Calls paygrid makes to payment channels (Charge, GetCharge, Void, Refund).
        self.channel_call_seconds = Histogram(
            "paygrid_channel_call_duration_seconds",
            "Duration of calls to a payment channel, whatever their outcome.",
            ("channel", "method"), registry=registry, buckets=CHANNEL_CALL_BUCKETS_S)
        self.channel_call_errors = Counter(
            "paygrid_channel_call_errors",
            "Calls to a payment channel that ended with a status other than OK.",
            ("channel", "method", "grpc_code"), registry=registry)

        # Batches, from what each submission streams to its submitter.
        self.batch_items = Counter(
            "paygrid_batch_items", "Batch items made final, by final status.",
            ("status",), registry=registry)
        self.batch_submissions = Counter(
            "paygrid_batch_submissions", "Batch submissions that ran to their summary, by "
            "batch status.", ("status",), registry=registry)
        self.batch_apt_seconds = Histogram(
            "paygrid_batch_apt_seconds",
            "APT of each finished submission: the mean of its groups' processing times.",
            registry=registry, buckets=BATCH_APT_BUCKETS_S)
        self.batch_throughput = Histogram(
            "paygrid_batch_throughput_items_per_second",
            "Throughput of each finished submission: items made final per second of wall time.",
            registry=registry, buckets=BATCH_THROUGHPUT_BUCKETS)
        self.batch_last_apt_seconds = Gauge(
            "paygrid_batch_last_apt_seconds", "APT of the submission that finished last.",
            registry=registry)
        self.batch_last_throughput = Gauge(
            "paygrid_batch_last_throughput_items_per_second",
            "Throughput of the submission that finished last.", registry=registry)
