"""Reading stored benchmark results: the step a run is summed up by, two runs compared metric by metric, the
points of a sweep's latency-vs-rate chart, and whether a run shows an SLO met at a rate (the promotion gate's
question).

Pure: ``BenchResult``s in, values out.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from pydantic import BaseModel

from studio.benchmark import STATS, BenchResult, StepSummary, parse_slos

METRICS = ("ttft", "tpot", "itl", "e2el")
MAX_ERROR_SHARE = 0.01  # as a sweep's steps: more failed requests than this and a step does not count as met


def headline(result: BenchResult) -> StepSummary | None:
    """The step a run is summed up by: a sweep's step at its answer (None when nothing passed), else its one step."""
    if result.sweep is None:
        return result.steps[0] if result.steps else None
    if result.sweep.value is None:
        return None
    return result.steps[result.sweep.probes.index(result.sweep.value)]


class Difference(BaseModel):
    """One figure of two runs side by side: ``b - a`` and its share of ``a`` (None where either is missing)."""

    name: str  # "p99 e2el ms", "max rate", "goodput req/s", …
    a: float | None
    b: float | None
    delta: float | None
    pct: float | None


def _diff(name: str, a: float | None, b: float | None) -> Difference:
    delta = b - a if a is not None and b is not None else None
    pct = 100 * delta / a if delta is not None and a else None
    return Difference(name=name, a=a, b=b, delta=delta, pct=pct)


def compare(a: BenchResult, b: BenchResult) -> list[Difference]:
    """Two runs' headline steps, figure by figure: the sweep's answer (max rate), goodput, throughputs, and each
    metric at the mean and each percentile."""
    sa, sb = headline(a), headline(b)
    rows = [
        _diff("max rate", a.sweep.value if a.sweep else None, b.sweep.value if b.sweep else None),
        _diff("goodput req/s", sa.goodput if sa else None, sb.goodput if sb else None),
        _diff("request throughput req/s", sa.request_throughput if sa else None, sb.request_throughput if sb else None),
        _diff("output throughput tok/s", sa.output_throughput if sa else None, sb.output_throughput if sb else None),
    ]
    for metric in METRICS:
        for stat in STATS:
            va = getattr(getattr(sa, metric), stat) if sa else None
            vb = getattr(getattr(sb, metric), stat) if sb else None
            rows.append(_diff(f"{stat} {metric} ms", va, vb))
    return rows


class ChartPoint(BaseModel):
    """One sweep step on the latency-vs-rate chart: the rate offered, the SLO's metric at P50 and P99."""

    rate: float
    p50_ms: float | None
    p99_ms: float | None
    passed: bool


def chart(result: BenchResult) -> tuple[str, list[ChartPoint]]:
    """A rate sweep's steps by offered rate, of its first SLO's metric: (metric, points in rate order); ("", [])
    for a run that is not a rate sweep."""
    sweep = result.plan.sweep
    if sweep is None or result.sweep is None or sweep.over != "rate":
        return "", []
    metric = sweep.slos[0].metric
    passed = {v for v, s in zip(result.sweep.probes, result.steps, strict=True) if _passed(result, v, s)}
    points = [
        ChartPoint(rate=v, p50_ms=getattr(s, metric).p50, p99_ms=getattr(s, metric).p99, passed=v in passed)
        for v, s in zip(result.sweep.probes, result.steps, strict=True)
    ]
    return metric, sorted(points, key=lambda p: p.rate)


def _passed(result: BenchResult, value: float, step: StepSummary) -> bool:
    sent = step.completed + step.errors
    return step.slo_met and not step.saturated and sent > 0 and step.errors / sent <= MAX_ERROR_SHARE


def knee(points: Sequence[ChartPoint]) -> float | None:
    """Where latency turns up: the offered rate after which P99 grows the most relative to the rate (the largest
    jump in P99 per unit of rate between neighbours, taken at the lower end). None with fewer than 3 points."""
    known = [p for p in points if p.p99_ms is not None]
    if len(known) < 3:
        return None
    slopes = [
        ((b.p99_ms - a.p99_ms) / max(b.rate - a.rate, 1e-9), a.rate)  # type: ignore[operator]
        for a, b in itertools.pairwise(known)
    ]
    return max(slopes)[1]


def meets(result: BenchResult, slo: str, rate: float | None) -> bool | None:
    """Whether ``result`` shows every SLO of ``slo`` (comma-separated) met at ``rate`` requests/s (any rate when
    None): a rate sweep under at least those SLOs whose answer is at least ``rate``, or a fixed-rate step at
    ``rate`` or above that met them (not saturated, few errors). None when the run does not bear on it: another
    SLO, a concurrency sweep, a step without a rate or slower than ``rate``."""
    wanted = {s.text for s in parse_slos([slo])}
    sweep = result.plan.sweep
    if sweep is not None and result.sweep is not None:
        if sweep.over != "rate" or not wanted <= {s.text for s in sweep.slos}:
            return None
        return result.sweep.value is not None and (rate is None or result.sweep.value >= rate)
    step = headline(result)
    if step is None or step.load.rate is None or (rate is not None and step.load.rate < rate):
        return None
    checks = {c.slo: c for c in step.checks}
    if not wanted <= set(checks):
        return None
    return _passed(result, step.load.rate, step) and all(checks[w].met for w in wanted)
