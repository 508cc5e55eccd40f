"""The benchmark's pure core: vLLM's metrics on hand-made timings, percentiles as numpy's, SLOs and their errors,
workloads and arrivals, and the sweep planner against simulated servers."""

from __future__ import annotations

import math
import random
import statistics

import numpy
import pytest

from studio.benchmark import (
    Arrival,
    BenchPlan,
    BenchResult,
    Load,
    Probe,
    Record,
    SloCheck,
    Stats,
    StepSummary,
    Sweep,
    Workload,
    answer,
    doomed,
    next_probe,
    parse_slo,
    parse_slos,
    percentile,
    summarize,
)
from studio.errors import InvalidSpec

# ------------------------------------------------------------------------------------------------ metrics


def test_one_request_has_vllms_ttft_itl_tpot_and_e2el() -> None:
    record = Record(sent=10.0, chunks=(10.1, 10.15, 10.2, 10.3), ended=10.31, output_tokens=4)
    assert record.ttft == pytest.approx(0.1)
    assert record.itl == pytest.approx([0.05, 0.05, 0.1])
    assert record.e2el == pytest.approx(0.31)
    assert record.tpot == pytest.approx((0.31 - 0.1) / 3)  # (E2EL - TTFT) / (output tokens - 1)
    assert Record(sent=0, chunks=(0.1,), ended=0.1, output_tokens=1).tpot is None  # one token: no TPOT


def test_a_step_summary_counts_errors_apart_and_pools_every_gap() -> None:
    fast = Record(sent=0.0, chunks=(0.1, 0.2, 0.3), ended=0.3, input_tokens=5, output_tokens=3)
    slow = Record(sent=0.5, chunks=(0.9, 1.4), ended=1.5, input_tokens=5, output_tokens=2)
    failed = Record(sent=0.6, ended=0.7, error="HTTP 500: boom")
    step = summarize([fast, slow, failed], load=Load(concurrency=2), slos=parse_slos(["p50_ttft_ms<=200"]))
    assert (step.completed, step.errors, step.error_examples) == (2, 1, ["HTTP 500: boom"])
    assert step.duration_s == pytest.approx(1.5)  # first send to last end
    assert step.request_throughput == pytest.approx(2 / 1.5)
    assert step.output_throughput == pytest.approx(5 / 1.5)
    assert step.ttft.mean == pytest.approx(250)  # the error's timing is not a latency
    assert step.itl.count == 3
    assert step.itl.mean == pytest.approx((100 + 100 + 500) / 3)
    assert step.tpot.p50 == pytest.approx(((0.3 - 0.1) / 2 + (1.0 - 0.4)) / 2 * 1000)
    assert step.e2el.p99 == pytest.approx(numpy.percentile([300, 1000], 99))
    # goodput (vLLM): requests meeting every SLO on their own values, per second; attainment over the completed
    assert step.goodput == pytest.approx(1 / 1.5)
    assert step.slo_attainment_pct == pytest.approx(50)
    assert step.checks[0].value_ms == pytest.approx(250)
    assert not step.checks[0].met


@pytest.mark.parametrize("q", [0, 1, 50, 90, 95, 99, 99.9, 100])
def test_percentiles_are_numpys_linear_interpolation(q: float) -> None:
    rng = random.Random(q)
    for n in (1, 2, 7, 50, 101):
        values = [rng.expovariate(1.0) for _ in range(n)]
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))
    assert math.isnan(percentile([], 50))


def test_stats_are_in_milliseconds_and_empty_without_values() -> None:
    assert Stats.of([0.1, 0.2, 0.3]).p50 == pytest.approx(200)
    assert Stats.of([]) == Stats(count=0)


# ------------------------------------------------------------------------------------------------ SLOs


def test_slos_parse_alone_combined_and_from_json() -> None:
    assert parse_slo("p99_e2el_ms<=2000").model_dump() == {"stat": "p99", "metric": "e2el", "limit_ms": 2000}
    texts = [s.text for s in parse_slos(["p90_ttft_ms<=500,mean_tpot_ms<=50", "median_itl_ms <= 30.5"])]
    assert texts == ["p90_ttft_ms<=500", "mean_tpot_ms<=50", "p50_itl_ms<=30.5"]
    plan = BenchPlan.model_validate_json(
        '{"url": "http://x", "model": "m", "load": {"rate": 2}, "requests": 5, "slos": ["p99_e2el_ms<=2000"]}'
    )
    assert plan.slos[0].limit_ms == 2000


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("p99_e2e_ms<=2000", "unknown metric 'e2e'"),
        ("p42x_ttft_ms<=10", "unknown statistic 'p42x'"),
        ("p99_ttft_ms>=10", "must be '<='"),
        ("p99_ttft_ms 10", "must be '<=' (an upper limit), not missing"),
        ("p99_ttft_ms<=fast", "the limit 'fast' is not a number"),
        ("p99_ttft_ms<=-5", "must be a positive number"),
        ("p99_ttft<=5", "is not STAT_METRIC_ms<=LIMIT"),
    ],
)
def test_a_wrong_slo_says_which_part_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_slo(text)
    assert says in caught.value.message
    assert text in caught.value.message
    assert "p99_e2el_ms<=2000" in caught.value.hint


# ------------------------------------------------------------------------------------------------ workloads, loads


def test_workloads_are_reproducible_and_within_their_range() -> None:
    workload = Workload(input_len=100, output_len=50, range_ratio=0.2, prefix_len=30, seed=7)
    shapes = [workload.shape(i) for i in range(500)]
    assert shapes == [Workload(input_len=100, output_len=50, range_ratio=0.2, prefix_len=30, seed=7).shape(i)
                      for i in range(500)]  # fmt: skip
    assert {s.prefix for s in shapes} == {30}
    assert min(s.input for s in shapes) == 80
    assert max(s.input for s in shapes) == 120
    assert min(s.output for s in shapes) == 40
    assert max(s.output for s in shapes) == 60
    assert shapes != [Workload(input_len=100, output_len=50, range_ratio=0.2, seed=8).shape(i) for i in range(500)]
    from_dataset = Workload(lengths=[(10, 3), (200, 40)])
    assert {(s.input, s.output) for s in (from_dataset.shape(i) for i in range(50))} == {(10, 3), (200, 40)}


def test_arrivals_keep_the_rate_and_burstiness_spreads_them() -> None:
    rng = random.Random(1)
    assert Load(rate=4, arrival=Arrival.CONSTANT).gap(rng) == 0.25
    assert Load(concurrency=3).gap(rng) == 0.0
    poisson = [Load(rate=4).gap(rng) for _ in range(20000)]
    bursty = [Load(rate=4, arrival=Arrival.BURSTY, burstiness=0.25).gap(rng) for _ in range(20000)]
    for gaps, cv in ((poisson, 1.0), (bursty, 2.0)):  # gamma(shape b): mean 1/rate, coefficient of variation 1/√b
        assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.05)
        assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(cv, rel=0.1)
    with pytest.raises(ValueError, match="burstiness applies to bursty arrivals only"):
        Load(rate=1, burstiness=2)
    with pytest.raises(ValueError, match="give a rate"):
        Load()


# ------------------------------------------------------------------------------------------------ saturation


def test_a_step_whose_completions_fall_behind_is_saturated() -> None:
    # 40 arrivals at 10/s; served one at a time at 5/s: the queue grows, completions come at 5/s
    queued = []
    free_at = 0.0
    for i in range(40):
        start = max(i / 10, free_at)
        free_at = start + 0.2
        queued.append(Record(sent=i / 10, chunks=(start + 0.1, start + 0.2), ended=free_at, output_tokens=2))
    step = summarize(queued, load=Load(rate=10, arrival=Arrival.CONSTANT))
    assert step.saturated
    assert step.achieved_rate == pytest.approx(5, rel=0.01)
    assert step.sent_rate == pytest.approx(10)
    assert step.in_flight_growth is not None
    assert step.in_flight_growth > 1.5
    kept_up = [Record(sent=i / 10, chunks=(i / 10 + 0.05,), ended=i / 10 + 0.1, output_tokens=1) for i in range(40)]
    assert not summarize(kept_up, load=Load(rate=10, arrival=Arrival.CONSTANT)).saturated


def test_a_step_is_doomed_once_enough_requests_are_past_a_percentile_limit() -> None:
    (slo,) = parse_slos(["p99_e2el_ms<=100"])
    # of 50, p99 interpolates between the 49th and 50th: one late request may still pass, two cannot
    assert not doomed([slo], 50, {slo.text: 1})
    assert doomed([slo], 50, {slo.text: 2})
    assert percentile([0.05] * 49 + [0.5], 99) * 1000 > 100  # one late can fail on its own...
    assert percentile([0.05] * 49 + [0.101], 99) * 1000 <= 100  # ...or not: so one is not yet doomed
    assert percentile([0.05] * 48 + [0.101] * 2, 99) * 1000 > 100
    assert not doomed(parse_slos(["mean_e2el_ms<=100"]), 50, {"mean_e2el_ms<=100": 50})  # a mean can recover


# ------------------------------------------------------------------------------------------------ the planner

LIMIT_MS = 1000.0


def step(value: float, *, ratio: float, saturated: bool = False, achieved: float | None = None) -> StepSummary:
    """A step summary as a simulated server would give it: the SLO's statistic at ``ratio`` × its limit."""
    met = ratio <= 1
    check = SloCheck(
        slo="p99_e2el_ms<=1000", value_ms=ratio * LIMIT_MS, low_ms=ratio * LIMIT_MS * 0.95,
        high_ms=ratio * LIMIT_MS * 1.02, limit_ms=LIMIT_MS, met=met,
    )  # fmt: skip
    empty = Stats(count=0)
    return StepSummary(
        load=Load(rate=value), duration_s=10, completed=60, errors=0, input_tokens=0, output_tokens=0,
        request_throughput=value, output_throughput=0, sent_rate=value, achieved_rate=achieved or value,
        in_flight_growth=1.0, saturated=saturated, ttft=empty, tpot=empty, itl=empty, e2el=empty, checks=[check],
    )  # fmt: skip


def knee_server(capacity: float):  # type: ignore[no-untyped-def]
    """Flat latency (70 % of the limit) up to ``capacity``; past it the queue grows and completions stay at it."""

    def serve(value: float) -> StepSummary:
        if value <= capacity:
            return step(value, ratio=0.7)
        return step(value, ratio=3.0, saturated=True, achieved=capacity * random.Random(value).uniform(0.97, 1.0))

    return serve


def smooth_server(limit_rate: float):  # type: ignore[no-untyped-def]
    """An M/M/1-like latency, 1 / (μ − λ), reaching the SLO's limit at ``limit_rate`` without saturating there."""
    mu = limit_rate * 1.5

    def serve(value: float) -> StepSummary:
        ratio = (1 / (mu - value)) / (1 / (mu - limit_rate)) if value < mu else 50.0
        return step(value, ratio=ratio, saturated=value >= mu, achieved=min(value, mu))

    return serve


def sweep_against(server, sweep: Sweep) -> tuple[list[Probe], float | None]:  # type: ignore[no-untyped-def]
    history: list[Probe] = []
    while (value := next_probe(sweep, history)) is not None:
        history.append(Probe.of(sweep, value, server(value)))
    return history, answer(sweep, history).value


@pytest.mark.parametrize("capacity", [0.37, 3.3, 9.0, 20.8, 41.0, 130.0])
def test_the_sweep_finds_a_knee_within_5_percent(capacity: float) -> None:
    sweep = Sweep(slos=["p99_e2el_ms<=1000"], start=1.0)
    history, found = sweep_against(knee_server(capacity), sweep)
    result = answer(sweep, history)
    assert result.converged
    assert found is not None
    assert result.failed_at is not None
    assert found <= capacity < result.failed_at <= found * 1.05 * 1.001
    ramp = math.ceil(math.log2(max(capacity, 1))) + 1 + (capacity < 1) * 2  # ×2 (or ÷2) until the first fail
    assert len(history) <= ramp + 3, [p.value for p in history]


@pytest.mark.parametrize("limit_rate", [2.7, 13.0, 55.0])
def test_the_sweep_finds_a_smooth_limit_within_5_percent(limit_rate: float) -> None:
    sweep = Sweep(slos=["p99_e2el_ms<=1000"], start=1.0)
    history, found = sweep_against(smooth_server(limit_rate), sweep)
    assert found is not None
    assert found <= limit_rate <= answer(sweep, history).failed_at
    assert answer(sweep, history).failed_at <= found * 1.0505  # type: ignore[operator]
    ramp = math.ceil(math.log2(limit_rate)) + 1
    assert len(history) <= ramp + 4, [p.value for p in history]


def test_a_saturated_step_fails_and_its_completion_rate_aims_the_next_probe() -> None:
    sweep = Sweep(slos=["p99_e2el_ms<=1000"], start=8)
    history = [Probe.of(sweep, 8, step(8, ratio=0.6)), Probe.of(sweep, 16, step(16, ratio=0.6))]
    met_but_saturated = step(32, ratio=0.9, saturated=True, achieved=20.0)
    history.append(Probe.of(sweep, 32, met_but_saturated))
    assert not history[-1].passed  # SLO met over a short step, but the server fell behind: not sustainable
    assert next_probe(sweep, history) == 20.0
    # saturated at the very first probe: down to what it completed, not just ÷2
    assert next_probe(sweep, [Probe.of(sweep, 40, step(40, ratio=5, saturated=True, achieved=4.9))]) == 4.9


def test_a_sweep_ends_when_nothing_passes_or_every_probe_passes() -> None:
    sweep = Sweep(slos=["p99_e2el_ms<=1000"], start=1, max_value=16)
    history, found = sweep_against(lambda v: step(v, ratio=2.0), sweep)
    assert found is None
    assert [p.value for p in history] == [1, 0.5, 0.25, 0.125, 0.0625]
    assert "no rate tried met p99_e2el_ms<=1000" in answer(sweep, history).statement
    history, found = sweep_against(lambda v: step(v, ratio=0.5), sweep)
    assert found == 16
    assert [p.value for p in history] == [1, 2, 4, 8, 16]
    assert not answer(sweep, history).converged


def test_errors_over_the_allowed_share_fail_a_step() -> None:
    sweep = Sweep(slos=["p99_e2el_ms<=1000"], max_error_rate=0.01)
    failing = step(5, ratio=0.5).model_copy(update={"errors": 2, "completed": 98})
    assert not Probe.of(sweep, 5, failing).passed
    assert Probe.of(sweep, 5, failing.model_copy(update={"errors": 1, "completed": 99})).passed


def test_a_concurrency_sweep_probes_whole_numbers_to_the_largest_passing() -> None:
    sweep = Sweep(slos=["p99_e2el_ms<=1000"], over="concurrency", start=1)
    history, found = sweep_against(lambda c: step(c, ratio=0.5 + c / 26), sweep)  # limit crossed at 13
    assert all(p.value == int(p.value) for p in history)
    assert found == 13
    assert answer(sweep, history).failed_at == 14
    assert len(history) <= 7, [p.value for p in history]  # GuideLLM 0.8.1's goodput took 7 probes in one run


def test_the_answer_says_its_bracket_samples_and_confidence() -> None:
    sweep = Sweep(slos=["p99_e2el_ms<=1000"], start=8)
    history, _ = sweep_against(knee_server(20.0), sweep)
    result = answer(sweep, history)
    assert result.confident
    assert result.samples == 60
    assert result.probes == [p.value for p in history]
    assert f"passed at {result.value:g}, failed at {result.failed_at:g}" in result.statement
    assert "95 % bootstrap interval 665–714 ms, under the limit 1000 ms" in result.statement
    close = [Probe.of(sweep, 8, step(8, ratio=0.99)), Probe.of(sweep, 8.4, step(8.4, ratio=1.2))]
    doubtful = answer(sweep, close)  # the interval reaches past the limit: converged, not confident
    assert doubtful.converged
    assert not doubtful.confident
    assert "Not conclusive" in doubtful.statement


def test_a_plan_is_one_step_or_a_sweep_and_its_result_round_trips() -> None:
    with pytest.raises(ValueError, match="either a load"):
        BenchPlan(url="http://x", model="m")
    with pytest.raises(ValueError, match="a number of requests or a duration"):
        BenchPlan(url="http://x", model="m", load=Load(concurrency=1))
    plan = BenchPlan(url="http://x", model="m", sweep=Sweep(slos=["p99_e2el_ms<=1000"]))
    history, _ = sweep_against(knee_server(5.0), plan.sweep)  # type: ignore[arg-type]
    result = BenchResult(plan=plan, steps=[p.summary for p in history], sweep=answer(plan.sweep, history), duration_s=1)  # type: ignore[arg-type]
    assert BenchResult.model_validate_json(result.model_dump_json()) == result
