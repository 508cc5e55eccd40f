"""A serving benchmark's pure core: workloads, load shapes, SLOs, vLLM's metrics, and the SLO sweep's planner.

Metrics follow ``vllm bench serve`` (its ``calculate_metrics``), per request that succeeded:

- **TTFT**: from sending the request to its first streamed content chunk.
- **ITL**: each gap between two consecutive content chunks of one request; the statistics are over every gap of
  every request together.
- **TPOT**: ``(E2EL - TTFT) / (output tokens - 1)``, for requests with at least 2 output tokens.
- **E2EL**: from sending the request to the last data event of its stream (the usage event included).

Each is reported in milliseconds at the mean and at P50, P90, P95 and P99, percentiles by linear interpolation
between the closest ranks (numpy's default, which vLLM uses). **Goodput** is, as in vLLM, the requests that meet
every SLO (each request's own TTFT, TPOT and E2EL, and its own gaps' statistic for ITL) per second of the step;
**SLO attainment** is the share of them in percent. Throughputs divide by the step's duration: from its first
send to its last completion.

The sweep (``next_probe``) is a state machine: given the probes so far it names the next rate (or concurrency) or
says it is done; ``answer`` says what it found and how sure it is. Nothing here does I/O; time and randomness
come in as values and seeds.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.errors import InvalidSpec

STATS = ("mean", "p50", "p90", "p95", "p99")
BOOTSTRAP_RESAMPLES = 200

# ------------------------------------------------------------------------------------------------ workload


@dataclass(frozen=True)
class Shape:
    """One request's wanted lengths in tokens: a ``prefix`` shared by every request, then ``input`` of its own."""

    prefix: int
    input: int
    output: int


class Workload(BaseModel):
    """Which requests to send: synthetic lengths (as vLLM's random dataset: uniform in ``mean × (1 ± range_ratio)``)
    or ``lengths`` drawn from a dataset's (input, output) pairs; ``prefix_len`` shared tokens before each prompt.
    Request ``i``'s shape depends only on ``seed`` and ``i``, so a run is reproducible."""

    model_config = ConfigDict(frozen=True)
    input_len: int = Field(default=256, ge=1)
    output_len: int = Field(default=128, ge=1)
    range_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    prefix_len: int = Field(default=0, ge=0)
    lengths: list[tuple[int, int]] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _lengths_positive(self) -> Workload:
        if self.lengths is not None and (not self.lengths or any(i < 1 or o < 1 for i, o in self.lengths)):
            raise ValueError("lengths must be a non-empty list of (input, output) pairs of at least 1 token each")
        return self

    def shape(self, index: int) -> Shape:
        rng = random.Random(self.seed * 1_000_003 + index)
        if self.lengths is not None:
            wanted_in, wanted_out = self.lengths[rng.randrange(len(self.lengths))]
            return Shape(prefix=self.prefix_len, input=wanted_in, output=wanted_out)

        def draw(mean: int) -> int:
            return max(1, rng.randint(int(mean * (1 - self.range_ratio)), int(mean * (1 + self.range_ratio))))

        return Shape(prefix=self.prefix_len, input=draw(self.input_len), output=draw(self.output_len))


# ------------------------------------------------------------------------------------------------ load


class Arrival(StrEnum):
    CONSTANT = "constant"  # every 1/rate seconds
    POISSON = "poisson"  # exponential gaps with mean 1/rate
    BURSTY = "bursty"  # gamma gaps with shape `burstiness` and mean 1/rate (vLLM's --burstiness; 1 is Poisson)


class Load(BaseModel):
    """How requests are offered: at ``rate`` per second with ``arrival`` gaps, at most ``concurrency`` in flight;
    with ``concurrency`` alone, each finished request is followed at once by the next (a closed loop)."""

    model_config = ConfigDict(frozen=True)
    rate: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    arrival: Arrival = Arrival.POISSON
    burstiness: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _some_load(self) -> Load:
        if self.rate is None and self.concurrency is None:
            raise ValueError("give a rate (requests/s) or a concurrency")
        if self.burstiness != 1.0 and self.arrival != Arrival.BURSTY:
            raise ValueError("burstiness applies to bursty arrivals only")
        return self

    def gap(self, rng: random.Random) -> float:
        """Seconds between one request and the next (0 without a rate: as fast as the concurrency allows)."""
        if self.rate is None:
            return 0.0
        if self.arrival == Arrival.CONSTANT:
            return 1.0 / self.rate
        shape = self.burstiness if self.arrival == Arrival.BURSTY else 1.0
        return rng.gammavariate(shape, 1.0 / (self.rate * shape))

    def words(self) -> str:
        parts = []
        if self.rate is not None:
            kind = f"bursty ×{self.burstiness:g}" if self.arrival == Arrival.BURSTY else self.arrival.value
            parts.append(f"{self.rate:.3g} req/s {kind}")
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        return ", ".join(parts)


# ------------------------------------------------------------------------------------------------ SLOs

Metric = Literal["ttft", "tpot", "itl", "e2el"]
_SLO = re.compile(r"^\s*(?P<stat>[a-z0-9.]+)_(?P<metric>[a-z0-9]+)_ms\s*(?P<op><=|<|>=|>|=)?\s*(?P<limit>.*?)\s*$")


class Slo(BaseModel):
    """A limit on a statistic of a metric, in milliseconds: ``p99_e2el_ms<=2000``. Accepts that text as input."""

    model_config = ConfigDict(frozen=True)
    stat: str  # one of STATS
    metric: Metric
    limit_ms: float = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return parse_slo(value).model_dump() if isinstance(value, str) else value

    @property
    def text(self) -> str:
        return f"{self.stat}_{self.metric}_ms<={self.limit_ms:g}"


def parse_slo(text: str) -> Slo:
    """``p99_e2el_ms<=2000`` as an ``Slo``; InvalidSpec naming the part that is wrong."""
    hint = (
        "write STAT_METRIC_ms<=LIMIT, e.g. p99_e2el_ms<=2000 (STAT: mean p50 p90 p95 p99; METRIC: ttft tpot itl e2el)"
    )
    found = _SLO.match(text)
    if found is None:
        raise InvalidSpec(f"SLO {text!r} is not STAT_METRIC_ms<=LIMIT", hint=hint)
    stat, metric, op, limit = found["stat"], found["metric"], found["op"], found["limit"]
    stat = "p50" if stat == "median" else stat
    if stat not in STATS:
        raise InvalidSpec(f"SLO {text!r}: unknown statistic {stat!r} (known: {', '.join(STATS)})", hint=hint)
    if metric not in ("ttft", "tpot", "itl", "e2el"):
        raise InvalidSpec(f"SLO {text!r}: unknown metric {metric!r} (known: ttft, tpot, itl, e2el)", hint=hint)
    if op != "<=":
        wrong = repr(op) if op else "missing"
        raise InvalidSpec(f"SLO {text!r}: the comparison must be '<=' (an upper limit), not {wrong}", hint=hint)
    try:
        value = float(limit)
    except ValueError:
        raise InvalidSpec(f"SLO {text!r}: the limit {limit!r} is not a number of milliseconds", hint=hint) from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidSpec(f"SLO {text!r}: the limit must be a positive number of milliseconds", hint=hint)
    return Slo.model_construct(stat=stat, metric=metric, limit_ms=value)


def parse_slos(texts: Sequence[str]) -> list[Slo]:
    """Several SLOs, each given alone or comma-separated (``p99_e2el_ms<=2000,p90_ttft_ms<=500``)."""
    return [parse_slo(part) for text in texts for part in text.split(",") if part.strip()]


# ------------------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Record:
    """One request as the client saw it, in seconds of ``time.perf_counter``: when it was sent, when each content
    chunk arrived, when its stream ended; ``output_tokens`` from the usage the server reported (else chunks)."""

    sent: float
    chunks: tuple[float, ...] = ()
    ended: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float:
        return self.chunks[0] - self.sent if self.chunks else self.ended - self.sent

    @property
    def e2el(self) -> float:
        return self.ended - self.sent

    @property
    def tpot(self) -> float | None:
        return (self.e2el - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None

    @property
    def itl(self) -> list[float]:
        return [b - a for a, b in zip(self.chunks, self.chunks[1:], strict=False)]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0…100) by linear interpolation between closest ranks, as ``numpy.percentile``'s
    default; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def statistic(values: Sequence[float], stat: str) -> float:
    if stat == "mean":
        return sum(values) / len(values) if values else math.nan
    return percentile(values, float(stat[1:]))


class Stats(BaseModel):
    """A metric over a step, in milliseconds (None where there were no values)."""

    model_config = ConfigDict(frozen=True)
    count: int
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        if not seconds:
            return cls(count=0)
        return cls(count=len(seconds), **{s: statistic(seconds, s) * 1000 for s in STATS})


class SloCheck(BaseModel):
    """An SLO at one step: the measured statistic, a 95 % bootstrap interval of it, and whether it is met."""

    model_config = ConfigDict(frozen=True)
    slo: str
    value_ms: float | None
    low_ms: float | None
    high_ms: float | None
    limit_ms: float
    met: bool


def metric_values(records: Sequence[Record], metric: str) -> list[float]:
    """Every value of ``metric`` (seconds) over the successful requests, as vLLM gathers them."""
    done = [r for r in records if r.error is None]
    if metric == "itl":
        return [gap for r in done for gap in r.itl]
    if metric == "tpot":
        return [t for r in done if (t := r.tpot) is not None]
    return [getattr(r, metric) for r in done]


def meets(record: Record, slo: Slo) -> bool:
    """Whether one request meets an SLO (vLLM's goodput): its own TTFT/TPOT/E2EL, or its own gaps' statistic."""
    if slo.metric == "itl":
        gaps = record.itl
        value = statistic(gaps, slo.stat) if gaps else 0.0
    elif slo.metric == "tpot":
        value = record.tpot or 0.0
    else:
        value = getattr(record, slo.metric)
    return bool(value * 1000 <= slo.limit_ms)


def bootstrap(values: Sequence[float], stat: str, *, seed: int = 0) -> tuple[float, float]:
    """A 95 % percentile-bootstrap interval of ``stat`` over ``values`` (seeded, so reproducible)."""
    rng = random.Random(seed)
    n = len(values)
    draws = sorted(statistic([values[rng.randrange(n)] for _ in range(n)], stat) for _ in range(BOOTSTRAP_RESAMPLES))
    return percentile(draws, 2.5), percentile(draws, 97.5)


def check(records: Sequence[Record], slo: Slo) -> SloCheck:
    values = metric_values(records, slo.metric)
    if not values:
        return SloCheck(slo=slo.text, value_ms=None, low_ms=None, high_ms=None, limit_ms=slo.limit_ms, met=False)
    value = statistic(values, slo.stat) * 1000
    low, high = bootstrap(values, slo.stat)
    met = value <= slo.limit_ms
    return SloCheck(
        slo=slo.text, value_ms=value, low_ms=low * 1000, high_ms=high * 1000, limit_ms=slo.limit_ms, met=met
    )


class StepSummary(BaseModel):
    """One load step's results: what was offered, what came back, the metrics, the SLOs, and whether the server
    kept up (``saturated``: completions fell behind arrivals, or the requests in flight kept growing)."""

    load: Load
    duration_s: float
    completed: int
    errors: int
    error_examples: list[str] = []
    cut_short: bool = False  # stopped once the SLOs could no longer be met
    input_tokens: int
    output_tokens: int
    request_throughput: float  # completed requests/s
    output_throughput: float  # output tokens/s
    sent_rate: float | None  # the arrivals' own rate, requests/s
    achieved_rate: float | None  # completions' rate past the step's first quarter, requests/s
    in_flight_growth: float | None  # mean in flight over the last third of arrivals ÷ over the middle third
    saturated: bool
    ttft: Stats
    tpot: Stats
    itl: Stats
    e2el: Stats
    goodput: float | None = None  # requests meeting every SLO, per second
    slo_attainment_pct: float | None = None
    checks: list[SloCheck] = []

    @property
    def slo_met(self) -> bool:
        """Every SLO met, errors under the allowed share, and not cut short (vacuously true without SLOs)."""
        return not self.cut_short and all(c.met for c in self.checks)

    def worst_ratio(self) -> float:
        """The largest measured/limit over the SLOs (inf where an SLO had no values)."""
        ratios = [c.value_ms / c.limit_ms if c.value_ms is not None else math.inf for c in self.checks]
        return max(ratios, default=0.0)


@dataclass(frozen=True)
class SaturationRule:
    """When a step counts as saturated: completions slower than ``min_achieved`` × the arrivals' rate, or the mean
    in flight over the last third of arrivals over ``max_growth`` × the middle third's (and at least 2)."""

    min_achieved: float = 0.9
    max_growth: float = 1.5


def in_flight_at(records: Sequence[Record], moment: float) -> int:
    return sum(1 for r in records if r.sent < moment and (r.ended > moment or r.ended == 0.0))


def summarize(
    records: Sequence[Record],
    *,
    load: Load,
    slos: Sequence[Slo] = (),
    cut_short: bool = False,
    rule: SaturationRule = SaturationRule(),
) -> StepSummary:
    """The summary of one step's records (successful and failed alike)."""
    done = [r for r in records if r.error is None]
    failed = [r for r in records if r.error is not None]
    start = min((r.sent for r in records), default=0.0)
    end = max((r.ended for r in records), default=start)
    duration = max(end - start, 1e-9)
    sends = sorted(r.sent for r in records)
    ends = sorted(r.ended for r in done)
    sent_rate = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 2 and sends[-1] > sends[0] else None
    # completions' rate past the first quarter: the first requests of a step finish before any queue forms
    steady = ends[len(ends) // 4 :] if len(ends) >= 8 else ends
    achieved = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 and steady[-1] > steady[0] else None
    growth = None
    if len(sends) >= 9:
        third = len(sends) // 3
        middle = [in_flight_at(records, t) for t in sends[third : 2 * third]]
        last = [in_flight_at(records, t) for t in sends[2 * third :]]
        mean_middle, mean_last = sum(middle) / len(middle), sum(last) / len(last)
        growth = mean_last / max(mean_middle, 1.0)
        growth_saturated = growth > rule.max_growth and mean_last >= 2
    else:
        growth_saturated = False
    behind = load.rate is not None and sent_rate is not None and (achieved or 0.0) < rule.min_achieved * sent_rate
    good = [r for r in done if all(meets(r, s) for s in slos)] if slos else []
    return StepSummary(
        load=load,
        duration_s=duration,
        completed=len(done),
        errors=len(failed),
        error_examples=sorted({r.error or "" for r in failed})[:5],
        cut_short=cut_short,
        input_tokens=sum(r.input_tokens for r in done),
        output_tokens=sum(r.output_tokens for r in done),
        request_throughput=len(done) / duration,
        output_throughput=sum(r.output_tokens for r in done) / duration,
        sent_rate=sent_rate,
        achieved_rate=achieved,
        in_flight_growth=growth,
        saturated=bool(behind or growth_saturated),
        ttft=Stats.of(metric_values(records, "ttft")),
        tpot=Stats.of(metric_values(records, "tpot")),
        itl=Stats.of(metric_values(records, "itl")),
        e2el=Stats.of(metric_values(records, "e2el")),
        goodput=len(good) / duration if slos else None,
        slo_attainment_pct=100 * len(good) / len(done) if slos and done else None,
        checks=[check(records, s) for s in slos],
    )


def doomed(slos: Sequence[Slo], planned: int, over_limit: dict[str, int]) -> bool:
    """Whether a step of ``planned`` requests can no longer meet a percentile SLO: at least ``planned - floor(q ×
    (planned - 1))`` requests are (or will be, still in flight past the limit) over it, so the interpolated
    percentile lies above the limit whatever the rest do. ``over_limit`` counts by ``Slo.text``; TTFT and E2EL only."""
    for slo in slos:
        if slo.stat == "mean" or slo.metric not in ("ttft", "e2el") or planned < 1:
            continue
        rank = math.floor(float(slo.stat[1:]) / 100 * (planned - 1))
        if over_limit.get(slo.text, 0) >= planned - rank:
            return True
    return False


# ------------------------------------------------------------------------------------------------ the sweep


class Sweep(BaseModel):
    """Find the largest request rate (or concurrency) whose steps meet every SLO: a ramp ×``factor`` from
    ``start`` until a step fails (or ÷``factor`` down until one passes), then probes inside the bracket until the
    last pass and the first fail are within ``tolerance`` of each other. A step fails when an SLO is missed, more
    than ``max_error_rate`` of its requests failed, or the server was saturated. Each step sends at least
    ``min_samples`` requests and lasts about ``min_duration_s``."""

    model_config = ConfigDict(frozen=True)
    slos: list[Slo] = Field(min_length=1)
    over: Literal["rate", "concurrency"] = "rate"
    start: float = Field(default=1.0, gt=0)
    factor: float = Field(default=2.0, gt=1)
    tolerance: float = Field(default=0.05, gt=0, lt=1)
    min_samples: int = Field(default=50, ge=1)
    min_duration_s: float = Field(default=5.0, ge=0)
    max_probes: int = Field(default=12, ge=1)
    max_value: float | None = Field(default=None, gt=0)
    min_value: float | None = Field(default=None, gt=0)  # default: start ÷ factor⁴
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    arrival: Arrival = Arrival.POISSON
    burstiness: float = Field(default=1.0, gt=0)

    def load(self, value: float) -> Load:
        if self.over == "concurrency":
            return Load(concurrency=int(value))
        return Load(rate=value, arrival=self.arrival, burstiness=self.burstiness)

    def requests(self, value: float) -> int:
        """How many requests a step at ``value`` sends: enough samples, and about ``min_duration_s`` of arrivals."""
        if self.over == "concurrency":
            return max(self.min_samples, 4 * int(value))
        return max(self.min_samples, math.ceil(value * self.min_duration_s))


class Probe(BaseModel):
    """One step of a sweep: the rate (or concurrency) tried, its summary, and whether it passed."""

    value: float
    passed: bool
    summary: StepSummary

    @classmethod
    def of(cls, sweep: Sweep, value: float, summary: StepSummary) -> Probe:
        sent = summary.completed + summary.errors
        error_share = summary.errors / sent if sent else 1.0
        passed = summary.slo_met and not summary.saturated and error_share <= sweep.max_error_rate
        return cls(value=value, passed=passed and summary.completed > 0, summary=summary)


def bracket(history: Sequence[Probe]) -> tuple[Probe | None, Probe | None]:
    """The lowest failing probe, and the highest passing one below it (a pass above a fail is noise: ignored)."""
    fails = [p for p in history if not p.passed]
    high = min(fails, key=lambda p: p.value) if fails else None
    passes = [p for p in history if p.passed and (high is None or p.value < high.value)]
    low = max(passes, key=lambda p: p.value) if passes else None
    return low, high


def _closed(sweep: Sweep, low: float, high: float) -> bool:
    # a little slack: probe values are rounded to 4 digits, which must not cost a probe
    return high / low <= (1 + sweep.tolerance) * 1.001 or (sweep.over == "concurrency" and high - low <= 1)


def _capacity(probe: Probe) -> float | None:
    """What a saturated rate step says the server can complete per second (None for others)."""
    s = probe.summary
    return s.achieved_rate if s.saturated and s.load.rate is not None else None


def _estimate(low: Probe, high: Probe) -> float:
    """Where the SLO's limit is crossed: the failing end's completion rate when it was saturated (its latency
    then depends on the step's length, not on the rate), else where the headroom (limit ÷ measured) reaches 1,
    interpolated linearly: exact for a latency like 1 / (capacity − rate), as a queue's."""
    if (capacity := _capacity(high)) is not None:
        return capacity
    r_low, r_high = low.summary.worst_ratio(), high.summary.worst_ratio()
    if r_low > 0 and r_high > r_low:
        y_low, y_high = 1 / r_low, 1 / r_high  # 0 when the failing end had no values at all (inf)
        return low.value + (y_low - 1) / (y_low - y_high) * (high.value - low.value)
    return math.sqrt(low.value * high.value)


def _snap(sweep: Sweep, value: float, low: float | None = None, high: float | None = None) -> float:
    """A probe value: concurrencies are whole and strictly inside (low, high); rates are rounded to 4 digits."""
    if sweep.over == "concurrency":
        whole = round(value)
        if low is not None:
            whole = max(whole, int(low) + 1)
        if high is not None:
            whole = min(whole, int(high) - 1)
        return float(max(whole, 1))
    return float(f"{value:.4g}")


def next_probe(sweep: Sweep, history: Sequence[Probe]) -> float | None:
    """The next rate (or concurrency) to try after ``history``, or None when the sweep is done."""
    if not history:
        return _snap(sweep, sweep.start)
    if len(history) >= sweep.max_probes:
        return None
    low, high = bracket(history)
    tol = 1 + sweep.tolerance
    if high is None:  # every probe passed: ramp up
        assert low is not None
        if sweep.max_value is not None and low.value >= sweep.max_value:
            return None
        return _snap(sweep, min(low.value * sweep.factor, sweep.max_value or math.inf))
    if low is None:  # every probe failed: ramp down, no further than a saturated step's completion rate
        floor = sweep.min_value or sweep.start / sweep.factor**4
        down = min(high.value / sweep.factor, _capacity(high) or math.inf)
        if down < floor or (sweep.over == "concurrency" and high.value <= 1):
            return None
        return _snap(sweep, down)
    if _closed(sweep, low.value, high.value):
        return None
    # probes since a bracket first existed; three on the same side in a row (an estimate, then the probe that
    # should have closed the bracket, then another): the estimate keeps missing, so halve the bracket instead
    first = next(i for i in range(len(history) + 1) if {p.passed for p in history[:i]} == {True, False})
    since = history[first - 1 :]
    one_sided = len(since) >= 4 and since[-1].passed == since[-2].passed == since[-3].passed
    if high.value / low.value <= tol**2 or one_sided:
        guess = math.sqrt(low.value * high.value)  # one probe closes it either way / the estimate keeps missing
    else:
        guess = _estimate(low, high)
        # aimed at the crossing; when it lies within tolerance of an end, the probe that closes the bracket
        guess = min(max(guess, low.value * tol), high.value / tol)
    return _snap(sweep, guess, low.value, high.value)


class SweepAnswer(BaseModel):
    """What a sweep found: the largest passing value, the bracket around the limit, the probes it used, and how
    sure it is (each SLO's bootstrap interval at the answer against its limit)."""

    over: Literal["rate", "concurrency"]
    value: float | None  # the largest rate (requests/s) or concurrency that passed; None if none did
    failed_at: float | None  # the smallest that failed above it; None if none did
    probes: list[float]
    converged: bool  # the bracket is within the tolerance
    samples: int  # requests completed at the answer
    checks: list[SloCheck]
    confident: bool  # converged, and every check's interval lies under its limit
    statement: str


def answer(sweep: Sweep, history: Sequence[Probe]) -> SweepAnswer:
    low, high = bracket(history)
    unit = "req/s" if sweep.over == "rate" else "concurrent requests"
    slos = ", ".join(s.text for s in sweep.slos)
    converged = low is not None and high is not None and _closed(sweep, low.value, high.value)
    checks = low.summary.checks if low is not None else []
    confident = converged and bool(checks) and all(c.high_ms is not None and c.high_ms <= c.limit_ms for c in checks)
    if low is None:
        statement = f"no {sweep.over} tried met {slos}: the lowest, {high.value if high else 0:g} {unit}, failed"
    else:
        where = (
            f"passed at {low.value:g}, failed at {high.value:g} ({(high.value / low.value - 1) * 100:.1f} % apart)"
            if high is not None
            else f"every probe passed, up to {low.value:g}"
        )
        statement = f"largest {sweep.over} meeting {slos}: {low.value:g} {unit} ({where}; {len(history)} probes)."
        for c in checks:
            side = "under" if c.high_ms is not None and c.high_ms <= c.limit_ms else "not all under"
            statement += (
                f" {c.slo.split('<=')[0]} at the answer over {low.summary.completed} requests: {c.value_ms:.0f} ms,"
                f" 95 % bootstrap interval {c.low_ms:.0f}–{c.high_ms:.0f} ms, {side} the limit {c.limit_ms:g} ms."
            )
        if not confident:
            statement += " Not conclusive: rerun with more samples per step (--min-samples)." if converged else ""
    return SweepAnswer(
        over=sweep.over,
        value=low.value if low else None,
        failed_at=high.value if high else None,
        probes=[p.value for p in history],
        converged=converged,
        samples=low.summary.completed if low else 0,
        checks=checks,
        confident=confident,
        statement=statement,
    )


# ------------------------------------------------------------------------------------------------ a run


class BenchSpec(BaseModel):
    """What a benchmark run sends, wherever it is sent: the ``workload``, and either one step (``load`` for
    ``requests`` and/or ``duration_s``, judged against ``slos``) or a ``sweep``. A stored run keeps this."""

    endpoint: Literal["chat", "completions"] = "chat"
    workload: Workload = Workload()
    load: Load | None = None
    requests: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)
    slos: list[Slo] = []
    sweep: Sweep | None = None
    request_timeout_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> BenchSpec:
        if (self.load is None) == (self.sweep is None):
            raise ValueError("give either a load (one step) or a sweep")
        if self.load is not None and self.requests is None and self.duration_s is None:
            raise ValueError("a step needs a number of requests or a duration")
        return self

    def words(self) -> str:
        """The run in a few words: ``sweep over rate for p99_e2el_ms<=2000`` or ``4 req/s poisson, 100 requests``."""
        if self.sweep is not None:
            return f"sweep over {self.sweep.over} for " + ", ".join(s.text for s in self.sweep.slos)
        assert self.load is not None
        amount = f"{self.requests} requests" if self.requests else f"{self.duration_s:g} s"
        return f"{self.load.words()}, {amount}"


class BenchPlan(BenchSpec):
    """A benchmark run, as ``python -m studio.bench PLAN.json`` reads it: where (``url``, an OpenAI-compatible base,
    and the ``model`` name to ask for; the key from the environment variable ``api_key_env``, else ``api_key``) and
    what (the ``BenchSpec``)."""

    url: str
    model: str
    api_key_env: str = "COVE_API_KEY"
    api_key: str | None = None  # a stored run's key, in its plan file only (0600); never in its result
    tokenizer: str | None = None  # a model folder whose tokenizer sizes the prompts; else one word ≈ one token


class BenchProgress(BaseModel):
    """``progress.json`` while a run goes: the steps finished and the last line said."""

    steps: int = 0
    line: str = ""


class BenchResult(BaseModel):
    """``result.json``: the plan, every step's summary in order, and the sweep's answer when there was one."""

    plan: BenchPlan
    steps: list[StepSummary]
    sweep: SweepAnswer | None = None
    duration_s: float
