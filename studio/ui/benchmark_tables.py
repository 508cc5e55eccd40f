"""What the Benchmarks page shows, shaped from stored runs: rows for its tables and the latency-vs-rate chart.

Pure functions (no Streamlit, no database), as ``ui/tables.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from studio.bench_results import Difference, chart, knee
from studio.benchmark import BenchResult
from studio.models import BenchmarkRunPublic


def run_rows(found: Iterable[BenchmarkRunPublic]) -> list[dict[str, Any]]:
    """One row per run, newest first: what it ran, against what, and what it found."""
    return [
        {
            "id": r.id,
            "status": r.status.value,
            "deployment": r.deployment,
            "version": f"{r.model} v{r.model_version}",
            "target": r.target if r.target == "gateway" else f"replica {r.replica}",
            "run": r.spec.words(),
            "max rate": r.max_rate,
            "progress": r.progress if not r.status.finished else "",
            "finished": r.finished_at.strftime("%Y-%m-%d %H:%M") if r.finished_at else "",
        }
        for r in found
    ]


def step_rows(result: BenchResult) -> list[dict[str, Any]]:
    """Every step in the order it ran: its load, what completed, and the SLO metrics' P50 and P99."""
    rows = []
    for i, step in enumerate(result.steps, start=1):
        row: dict[str, Any] = {
            "step": i,
            "load": step.load.words(),
            "done": step.completed,
            "errors": step.errors,
            "req/s": round(step.request_throughput, 2),
            "goodput": None if step.goodput is None else round(step.goodput, 2),
            "p50 e2el ms": _ms(step.e2el.p50),
            "p99 e2el ms": _ms(step.e2el.p99),
            "saturated": step.saturated,
        }
        row |= {c.slo: "met" if c.met else "missed" for c in step.checks}
        rows.append(row)
    return rows


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def chart_rows(result: BenchResult) -> tuple[str, list[dict[str, Any]]]:
    """A rate sweep's chart in long form: (the SLO's metric, rows of rate, statistic "P50"/"P99", milliseconds)."""
    metric, points = chart(result)
    rows = [{"rate": p.rate, "statistic": "P50", "ms": p.p50_ms} for p in points if p.p50_ms is not None]
    rows += [{"rate": p.rate, "statistic": "P99", "ms": p.p99_ms} for p in points if p.p99_ms is not None]
    return metric, rows


def marks(result: BenchResult) -> dict[str, float | None]:
    """What the chart marks: the SLO's limit (ms), the knee and the max sustainable rate (req/s)."""
    _, points = chart(result)
    sweep = result.plan.sweep
    return {
        "slo_ms": sweep.slos[0].limit_ms if sweep else None,
        "knee": knee(points),
        "max_rate": result.sweep.value if result.sweep else None,
    }


def difference_rows(found: Iterable[Difference]) -> list[dict[str, Any]]:
    """Two runs side by side: each figure of A and B, B − A and its share of A."""
    return [
        {
            "figure": d.name,
            "A": _round(d.a),
            "B": _round(d.b),
            "B − A": _round(d.delta),
            "%": None if d.pct is None else round(d.pct, 1),
        }
        for d in found
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
