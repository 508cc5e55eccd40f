"""The gateway's Prometheus metrics, on a registry of its own (one per gateway, never process-global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cove_gateway_requests",
            "Requests answered, by deployment, endpoint, status and model version",
            ["deployment", "endpoint", "code", "model_version"],
            registry=r,
        )
        self.tokens = Counter(
            "cove_gateway_tokens",
            "Tokens metered, by deployment and kind (prompt, completion)",
            ["deployment", "kind"],
            registry=r,
        )
        self.latency = Histogram(
            "cove_gateway_request_duration_seconds",
            "Time from request to last byte, by deployment, endpoint and model version",
            ["deployment", "endpoint", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "cove_gateway_time_to_first_token_seconds",
            "Time from request to first content chunk of a stream",
            ["deployment"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "cove_gateway_overhead_seconds",
            "Time the gateway itself adds to a request",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "cove_gateway_requests_in_flight", "Requests being proxied now", ["deployment"], registry=r
        )
        self.upstream_errors = Counter(
            "cove_gateway_upstream_errors",
            "Model-server failures, by kind (connect, timeout, broken_stream)",
            ["deployment", "kind"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
