"""The benchmark over real HTTP against a server with a designed capacity (tests/fakes/knee_server.py): K = 4 slots,
10 output tokens at 20 ms each, so a request alone takes S = 200 ms, and the server completes at most K / S =
20 requests/s. Under constant arrivals, latency stays at S up to 20 req/s and grows without bound past it: the
largest rate meeting ``p99_e2el_ms <= 1.5 × S`` is 20 req/s (a little above over a finite step)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from studio.benchmark import Arrival, BenchPlan, Load, Sweep, Workload
from studio.cli import cli
from studio.loadgen import Prompter, Step, StepRun, Target, run_plan
from tests.conftest import free_port
from tests.fakes import FAKES
from tests.integration.conftest import answers, wait_until

SLOTS, TOKEN_MS, TOKENS = 4, 20.0, 10
SERVICE_MS = TOKENS * TOKEN_MS
CAPACITY = SLOTS / (SERVICE_MS / 1000)  # requests/s
WORKLOAD = Workload(input_len=32, output_len=TOKENS)

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def knee() -> Iterator[str]:
    port = free_port()
    args = ["--port", str(port), "--slots", str(SLOTS), "--token-ms", str(TOKEN_MS)]
    proc = subprocess.Popen([sys.executable, str(FAKES / "knee_server.py"), *args])
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url + "/health"), timeout=10, what="the knee server")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_the_sweep_finds_the_designed_capacity_within_5_percent(knee: str) -> None:
    sweep = Sweep(
        slos=[f"p99_e2el_ms<={1.5 * SERVICE_MS:g}"],
        start=10,
        min_samples=60,
        min_duration_s=2,
        arrival=Arrival.CONSTANT,
    )
    lines: list[str] = []
    result = asyncio.run(
        run_plan(BenchPlan(url=knee, model="m", workload=WORKLOAD, sweep=sweep), api_key=None, say=lines.append)
    )
    found = result.sweep
    assert found is not None
    assert found.value is not None, "\n".join(lines)
    print(f"probes {found.probes}: {found.statement}")
    assert abs(found.value - CAPACITY) / CAPACITY <= 0.05, found.statement
    assert found.converged
    assert found.samples >= 60
    assert found.checks[0].value_ms <= 1.5 * SERVICE_MS
    assert len(found.probes) <= 6, found.probes  # ramp 10 → 20 → 40, then a probe or two at the knee
    assert any("probe 1: 10 req/s constant, 60 requests" in line for line in lines)
    failing = result.steps[found.probes.index(found.failed_at)]  # type: ignore[arg-type]
    assert failing.saturated or failing.cut_short


def test_fixed_concurrency_measures_the_designed_service_time(knee: str) -> None:
    def step(concurrency: int):  # type: ignore[no-untyped-def]
        plan = BenchPlan(url=knee, model="m", workload=WORKLOAD, load=Load(concurrency=concurrency), requests=40)
        return asyncio.run(run_plan(plan, api_key=None, say=lambda _: None)).steps[0]

    within = step(SLOTS)  # every request has a slot at once
    assert (within.completed, within.errors, within.output_tokens) == (40, 0, 40 * TOKENS)
    assert TOKEN_MS <= within.ttft.p50 <= TOKEN_MS + 25  # type: ignore[operator]
    assert within.itl.p50 == pytest.approx(TOKEN_MS, rel=0.15)
    assert within.tpot.p50 == pytest.approx(TOKEN_MS, rel=0.1)
    assert SERVICE_MS <= within.e2el.p50 <= SERVICE_MS + 30  # type: ignore[operator]
    assert within.request_throughput == pytest.approx(CAPACITY, rel=0.2)
    queued = step(2 * SLOTS)  # each request first waits for one whole service time: TTFT and E2EL grow by S
    assert queued.ttft.p50 == pytest.approx(SERVICE_MS + TOKEN_MS, rel=0.2)
    assert queued.e2el.p50 == pytest.approx(2 * SERVICE_MS, rel=0.15)
    assert queued.tpot.p50 == pytest.approx(TOKEN_MS, rel=0.1)  # streaming itself is no slower
    assert queued.request_throughput == pytest.approx(CAPACITY, rel=0.2)  # the capacity, not the concurrency


def test_a_steps_prompts_are_made_before_its_clock_starts(knee: str) -> None:
    """Making a prompt blocks the event loop (a tokenizer takes milliseconds): made between requests, it would be
    billed to the latencies of the streams in flight."""
    made: list[float] = []

    class Timed(Prompter):
        def text(self, tokens: int, rng: random.Random) -> str:
            made.append(time.perf_counter())
            return super().text(tokens, rng)

    async def go() -> StepRun:
        async with aiohttp.ClientSession() as session:
            run = StepRun(session, Target(url=knee, model="m"), Timed(WORKLOAD), Step(Load(concurrency=2), requests=12))
            await run.run(lambda _: None)
            return run

    run = asyncio.run(go())
    assert (len(run.records), len(made)) == (12, 12)
    assert max(made) < min(r.sent for r in run.records)


def test_cove_bench_prints_vllms_summary_and_json(knee: str, tmp_path: Path) -> None:
    env = {"COVE_HOME": str(tmp_path / "home")}
    args = ["bench", "m", "--url", knee + "/v1", "--concurrency", "2", "--requests", "6", "--output-len", "5"]
    shown = CliRunner().invoke(cli, [*args, "--slo", "p99_e2el_ms<=5000"], env=env, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "Serving Benchmark Result" in shown.output
    assert "Successful requests:" in shown.output
    assert re.search(r"P99 ITL \(ms\): +\d+\.\d\d\n", shown.output)
    assert re.search(r"SLO attainment \(%\): +100\.00\n", shown.output)
    as_json = CliRunner().invoke(cli, [*args, "--endpoint", "completions", "--json"], env=env, catch_exceptions=False)
    step = json.loads(as_json.stdout)["steps"][0]
    assert (step["completed"], step["output_tokens"]) == (6, 30)
    wrong = CliRunner().invoke(cli, ["bench", "m", "--url", knee, "--slo", "p99_latency_ms<=5"], env=env)
    assert wrong.exit_code == 1
    assert "unknown metric 'latency'" in wrong.output
    nobody = CliRunner().invoke(cli, ["bench", "m", "--url", f"http://127.0.0.1:{free_port()}", "--concurrency", "1",
                                      "--requests", "2"], env=env)  # fmt: skip
    assert nobody.exit_code == 1
    assert "error: no request succeeded (ClientConnectorError" in nobody.output


def test_the_bench_process_writes_result_json_beside_its_plan(knee: str, tmp_path: Path) -> None:
    plan = BenchPlan(url=knee, model="m", workload=WORKLOAD, load=Load(rate=10, arrival=Arrival.CONSTANT), requests=6)
    (tmp_path / "plan.json").write_text(plan.model_dump_json())
    done = subprocess.run(
        [sys.executable, "-m", "studio.bench", str(tmp_path / "plan.json")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["steps"][0]["completed"] == 6
    assert result["sweep"] is None
    assert "10 req/s constant against" in done.stdout
