"""The gateway's Prometheus metrics, on a registry of its own (one per gateway, never process-global).

Latency histograms use ``LATENCY_BUCKETS``: a geometric series from 5 ms by a factor of 1.25 to about 70 s (44
bounds, then 120 s and 300 s for long generations). ``histogram_quantile`` interpolates within one bucket, so a
P50–P99 read anywhere from 5 ms to 60 s is off by less than one bucket's width, at most 25 % of the value; a factor of
1.5 (24 bounds) would allow 50 %, and 1.1 (99 bounds) would multiply the series for little gain. The token-timing
histograms (TPOT, ITL) start lower, at 0.5 ms: a fast GPU emits a token every few milliseconds.

The latency histograms are ``FastHistogram``s: ITL is observed once per streamed chunk, and prometheus_client's
``Histogram.observe`` scans its bounds in Python under a lock; a bisect and a list increment cost a fraction of that.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


def geometric(start: float, factor: float, stop: float) -> tuple[float, ...]:
    """Bounds from ``start`` multiplied by ``factor`` until past ``stop``, rounded to 3 significant digits."""
    bounds, value = [], start
    while True:
        bounds.append(float(f"{value:.3g}"))
        if value >= stop:
            return tuple(bounds)
        value *= factor


LATENCY_BUCKETS = (*geometric(0.005, 1.25, 60.0), 120.0, 300.0)
TOKEN_BUCKETS = (*geometric(0.0005, 1.25, 10.0), 30.0)  # TPOT and ITL: per token, not per request
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
COLD_START_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)  # a replica starting: seconds


class FastHistogram(Collector):
    """A Prometheus histogram with labels, observed by a bisect: ``observe(labels, value)``; exported as any
    histogram (``_bucket``, ``_sum``, ``_count``). Not thread-safe: the gateway observes from its event loop only."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = tuple(buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}  # labels → per-bucket counts, then the sum

    def _row(self, labels: tuple[str, ...]) -> list[float]:
        row = self._series.get(labels)
        if row is None:
            row = self._series[labels] = [0.0] * (len(self.bounds) + 2)  # buckets, +Inf, sum
        return row

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self._row(labels)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def observe_many(self, labels: tuple[str, ...], values: Iterable[float]) -> None:
        row, bounds = self._row(labels), self.bounds
        for value in values:
            row[bisect.bisect_left(bounds, value)] += 1
            row[-1] += value

    def count(self, labels: tuple[str, ...]) -> int:
        row = self._series.get(labels)
        return 0 if row is None else int(sum(row[:-1]))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, row in sorted(self._series.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip((*map(str, self.bounds), "+Inf"), row[:-1], strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            family.add_metric(list(labels), buckets, row[-1])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


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
        self.cost = Counter(
            "cove_gateway_cost",
            "What billed requests cost at the deployment's price, by deployment and currency (in units of it)",
            ["deployment", "currency"],
            registry=r,
        )
        self.budget_refusals = Counter(
            "cove_gateway_budget_refusals",
            "Requests refused because a monthly budget was spent, by deployment",
            ["deployment"],
            registry=r,
        )
        self.latency = FastHistogram(
            "cove_gateway_request_duration_seconds",
            "Time from request to last byte (E2EL), by deployment, endpoint and model version",
            ["deployment", "endpoint", "model_version"],
            LATENCY_BUCKETS,
        )
        self.ttft = FastHistogram(
            "cove_gateway_time_to_first_token_seconds",
            "Time from request to first content chunk of a stream (TTFT)",
            ["deployment"],
            LATENCY_BUCKETS,
        )
        self.tpot = FastHistogram(
            "cove_gateway_time_per_output_token_seconds",
            "Per stream of more than one output token: (E2EL - TTFT) / (output tokens - 1) (TPOT)",
            ["deployment"],
            TOKEN_BUCKETS,
        )
        self.itl = FastHistogram(
            "cove_gateway_inter_token_latency_seconds",
            "Each gap between two content chunks of a stream, as the gateway relays them (ITL)",
            ["deployment"],
            TOKEN_BUCKETS,
        )
        self.cold_start = FastHistogram(
            "cove_gateway_cold_start_seconds",
            "Requests held while their deployment woke from zero replicas: from arrival to first token",
            ["deployment"],
            COLD_START_BUCKETS,
        )
        for histogram in (self.latency, self.ttft, self.tpot, self.itl, self.cold_start):
            r.register(histogram)
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
            "Model-server failures, by kind (connect, timeout, deadline, broken_stream; retried: sent again anew)",
            ["deployment", "kind"],
            registry=r,
        )
        self.usage_unspooled = Counter(
            "cove_gateway_usage_unspooled",
            "Usage records the spool could not write to disk (kept in memory only: a crash would lose them)",
            registry=r,
        )
        self.usage_lost = Counter(
            "cove_gateway_usage_lost",
            "Usage records dropped: neither on disk nor written to the database (see the gateway's log)",
            registry=r,
        )
        self.usage_pending = Gauge(
            "cove_gateway_usage_pending", "Usage records waiting for the database (spooled or in memory)", registry=r
        )
        self.auth_refusals = Counter(
            "cove_gateway_auth_refusals",
            "Requests refused before their key was looked up, by why (unknown_key, too_many_failures)",
            ["reason"],
            registry=r,
        )
        self.database_up = Gauge(
            "cove_gateway_database_up", "1 when the gateway's last read of the database succeeded", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
