"""Benchmark runs stored on the server: created through the API, run by the controller as a task through the
gateway against a deployment whose replica is the knee server (tests/fakes/knee_server.py: 4 slots, 10 tokens at
20 ms, so 20 requests/s at most), listed per deployment and model version, compared, deleted; the promotion gate's
SLO check read from them."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from cove.client import Client
from studio.api.app import build_api
from studio.bench_results import headline, meets
from studio.benchmark import (
    Arrival,
    BenchPlan,
    BenchResult,
    BenchSpec,
    Load,
    Probe,
    Record,
    Sweep,
    Workload,
    answer,
    parse_slos,
    summarize,
)
from studio.cli import cli
from studio.controller import Controller
from studio.db import Database
from studio.errors import Conflict, Forbidden, GateRefused, NotFound
from studio.gate import GateConfig, Results
from studio.login import Login
from studio.models import ApiKeyCreate, BenchmarkRunCreate, DatasetCreate
from studio.server import Server
from studio.services import aliases, benchmarks, datasets, keys, models
from studio.settings import Settings
from studio.values import JobStatus
from tests.integration.conftest import (
    GatewayServer,
    add_fake_image,
    deploy,
    page,
    register_demo,
    status_of,
    table,
    texts,
    wait_until,
)
from tests.people import ADMIN, member

SLOTS, TOKEN_MS, TOKENS = 4, 20.0, 10
CAPACITY = SLOTS / (TOKENS * TOKEN_MS / 1000)  # 20 requests/s
SLO = f"p99_e2el_ms<={1.5 * TOKENS * TOKEN_MS:g}"
SWEEP = BenchSpec(
    workload=Workload(input_len=32, output_len=TOKENS),
    sweep=Sweep(slos=[SLO], start=10, min_samples=60, min_duration_s=2, arrival=Arrival.CONSTANT),
)


def fixed_result(rate: float, e2el_s: float, requests: int = 40) -> BenchResult:
    """What a fixed-rate step at ``rate`` would store, each request taking ``e2el_s`` (constant arrivals)."""
    records = [
        Record(sent=i / rate, chunks=(i / rate + 0.01, i / rate + e2el_s), ended=i / rate + e2el_s, output_tokens=2)
        for i in range(requests)
    ]
    load = Load(rate=rate, arrival=Arrival.CONSTANT)
    step = summarize(records, load=load, slos=parse_slos([SLO]))
    plan = BenchPlan(url="http://x", model="m", load=load, requests=requests, slos=[SLO])
    return BenchResult(plan=plan, steps=[step], duration_s=1)


def sweep_result() -> BenchResult:
    """What a rate sweep of the knee server stores, made up: 0.2 s per request up to 20 req/s; past it a queue that
    grows by 50 ms a request. Probes 10, 20, 40, 21: the answer is 20 req/s."""
    sweep = SWEEP.sweep
    assert sweep is not None
    history = []
    for rate in (10.0, 20.0, 40.0, 21.0):
        extra = 0.0 if rate <= CAPACITY else 0.05
        records = [
            Record(sent=i / rate, chunks=(i / rate + 0.02, end), ended=end, output_tokens=TOKENS)
            for i, end in ((i, i / rate + 0.2 + i * extra) for i in range(60))
        ]  # fmt: skip
        history.append(Probe.of(sweep, rate, summarize(records, load=sweep.load(rate), slos=sweep.slos)))
    plan = BenchPlan(url="http://x", model="knee", **SWEEP.model_dump())
    return BenchResult(plan=plan, steps=[p.summary for p in history], sweep=answer(sweep, history), duration_s=9)


@pytest.fixture
def knee_deployed(db: Database, stub_model: str) -> str:
    image = add_fake_image(db, "knee_server.py", "--slots", str(SLOTS), "--token-ms", f"{TOKEN_MS:g}")
    deploy(db, "knee", stub_model, image)
    return "knee"


def test_the_gate_reads_the_slo_from_the_newest_run_that_bears_on_it(db: Database, knee_deployed: str) -> None:
    gate = GateConfig(slo=SLO, slo_rate=15)
    aliases.set_gate(db=db, actor=ADMIN, model="stub", gate=gate)
    with pytest.raises(GateRefused, match="not measured"):
        aliases.promote(db=db, actor=ADMIN, model="stub", version=1)

    def stored(result: BenchResult) -> int:
        spec = BenchSpec.model_validate(result.plan.model_dump(include=set(BenchSpec.model_fields)))
        run = benchmarks.create_benchmark(
            db=db, actor=ADMIN, data=BenchmarkRunCreate(deployment=knee_deployed, spec=spec, tokenizer=False)
        )
        benchmarks.finish(db=db, run_id=run.id, result=result, failure="")
        return run.id

    slow = stored(fixed_result(rate=16, e2el_s=0.5))  # at the rate, but past the limit
    assert meets(fixed_result(rate=16, e2el_s=0.5), SLO, 15) is False
    with pytest.raises(GateRefused, match="slo: p99_e2el_ms<=300 at 15 req/s missed") as refused:
        aliases.promote(db=db, actor=ADMIN, model="stub", version=1)
    assert refused.value.fields == [
        {"path": "slo", "message": f"p99_e2el_ms<=300 at 15 req/s missed — benchmark run {slow}"}
    ]
    stored(fixed_result(rate=10, e2el_s=0.2))  # meets the SLO, but below the gate's rate: does not bear on it
    with db.session() as session:
        assert benchmarks.slo_of(session, 1, gate) == (False, f"benchmark run {slow}")

    fast = stored(fixed_result(rate=20, e2el_s=0.2))
    with db.session() as session:
        assert benchmarks.slo_of(session, 1, gate) == (True, f"benchmark run {fast}")
    typed = aliases.promote(  # a result typed in wins over the stored one
        db=db,
        actor=ADMIN,
        model="stub",
        version=1,
        results={1: Results(slo_met=False, slo_source="me")},
        override_reason="x",
    )
    assert typed.overridden
    promoted = aliases.promote(db=db, actor=ADMIN, model="stub", version=1)
    assert not promoted.overridden
    assert promoted.checks == [
        {
            "name": "slo",
            "passed": True,
            "observed": None,
            "required": 15.0,
            "detail": f"p99_e2el_ms<=300 at 15 req/s met — benchmark run {fast}",
            "source": f"benchmark run {fast}",
        }
    ]

    listed = benchmarks.list_benchmarks(db=db, actor=ADMIN, deployment="knee", model="stub", version=1)
    assert [r.id for r in listed] == [fast, fast - 1, slow]
    assert headline(listed[0].result) is not None  # type: ignore[arg-type]
    mia = member(db, "mia")
    with pytest.raises(Forbidden, match="owned by admin"):
        benchmarks.get_benchmark(db=db, actor=mia, run_id=fast)
    assert benchmarks.list_benchmarks(db=db, actor=mia) == []
    queued = benchmarks.create_benchmark(
        db=db, actor=ADMIN, data=BenchmarkRunCreate(deployment="knee", spec=SWEEP, tokenizer=False)
    )
    with pytest.raises(Conflict, match="is queued"):
        benchmarks.delete_benchmark(db=db, actor=ADMIN, run_id=queued.id)
    with pytest.raises(Conflict, match="has no result"):
        benchmarks.compare_benchmarks(db=db, actor=ADMIN, a=fast, b=queued.id)


def test_a_datasets_rows_give_the_workloads_lengths_under_the_deployments_tokenizer(
    db: Database, settings: Settings, demo_folder: Path, tmp_path: Path
) -> None:
    register_demo(db, settings, demo_folder)
    deploy(db, "demo", "demo-chat")
    rows = [
        {"messages": [{"role": "user", "content": "word " * n}, {"role": "assistant", "content": "ok " * m}]}
        for n, m in ((5, 2), (60, 20))
    ]
    source = tmp_path / "chats.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    datasets.add_dataset(db=db, actor=ADMIN, data=DatasetCreate(name="chats", source=str(source)), settings=settings)
    spec = BenchSpec(load=Load(concurrency=1), requests=4)
    run = benchmarks.create_benchmark(
        db=db, actor=ADMIN, data=BenchmarkRunCreate(deployment="demo", spec=spec, dataset="chats")
    )
    (short_in, short_out), (long_in, long_out) = run.spec.workload.lengths or []
    assert long_in - short_in >= 55  # 55 more words of prompt: at least as many more tokens
    assert short_out >= 2
    assert long_out - short_out >= 18
    version = models.get_model(db=db, name="demo-chat").versions[0]
    assert run.tokenizer == version.path  # prompts sized with the deployment's own tokenizer
    with pytest.raises(NotFound, match="no dataset named 'nope'"):
        benchmarks.create_benchmark(
            db=db, actor=ADMIN, data=BenchmarkRunCreate(deployment="demo", spec=spec, dataset="nope")
        )


class ServerOnThread(GatewayServer):
    """The server's one app (the API beside the gateway), on a thread as `cove server` serves it."""

    def __init__(self, settings: Settings, db: Database) -> None:
        super().__init__(settings, db)
        self.server.config.app = Server(self.app, Login(settings=settings, db=db), build_api(settings=settings, db=db))


@pytest.fixture
def api(
    settings: Settings, db: Database, knee_deployed: str, controller: Controller
) -> Iterator[tuple[Client, dict[str, str]]]:
    """The API and the gateway on a thread, the controller (which starts the knee deployment and the runs), a token
    of the admin's for the API, and the environment `cove` needs to call it; the deployment is Ready."""
    token = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="bench", scopes=["*"])).key
    with ServerOnThread(settings, db), Client(settings.gateway_url, token) as client:
        wait_until(lambda: status_of(db, "knee", "Ready"), timeout=30, what="the knee server to be ready")
        yield client, {"COVE_API_URL": settings.gateway_url, "COVE_TOKEN": token, "COVE_HOME": str(settings.home)}


@pytest.mark.runtime
def test_a_stored_sweep_finds_the_designed_capacity_and_is_listed_compared_and_gated(
    db: Database, api: tuple[Client, dict[str, str]]
) -> None:
    client, env = api

    created = client.benchmarks.create("knee", SWEEP, tokenizer=False)
    assert (created.status, created.model, created.model_version) == (JobStatus.QUEUED, "stub", 1)
    done = client.benchmarks.wait(created.id, timeout=90)
    assert done.result is not None
    assert done.result.sweep is not None, done.message
    found = done.result.sweep.value
    assert found is not None
    assert abs(found - CAPACITY) / CAPACITY <= 0.05, done.message
    assert done.max_rate == found
    assert done.steps_done == len(done.result.steps)
    assert done.result.plan.api_key is None  # the key stays in the plan file
    assert not [k for k in client.keys.list() if k.name.startswith("bench-") and k.revoked_at is None]

    fixed = client.benchmarks.create(
        "knee", BenchSpec(workload=SWEEP.workload, load=Load(concurrency=2), requests=10), tokenizer=False
    )
    client.benchmarks.wait(fixed.id, timeout=60)
    differences = {d.name: d for d in client.benchmarks.compare(created.id, fixed.id)}
    assert (differences["max rate"].a, differences["max rate"].b) == (found, None)
    assert differences["p99 e2el ms"].delta == pytest.approx(
        differences["p99 e2el ms"].b - differences["p99 e2el ms"].a  # type: ignore[operator]
    )

    listed = CliRunner().invoke(cli, ["bench", "list", "--deployment", "knee"], env=env, catch_exceptions=False)
    assert re.search(rf"{created.id} +Succeeded +knee +stub:1 +gateway .*max {found:g} req/s", listed.output)
    compared = CliRunner().invoke(cli, ["bench", "compare", str(created.id), str(fixed.id), "--json"], env=env)
    assert json.loads(compared.stdout)[0]["name"] == "max rate"

    aliases.set_gate(db=db, actor=ADMIN, model="stub", gate=GateConfig(slo=SLO, slo_rate=15))
    promoted = aliases.promote(db=db, actor=ADMIN, model="stub", version=1)
    assert promoted.checks[0]["passed"]
    aliases.set_gate(db=db, actor=ADMIN, model="stub", gate=GateConfig(slo=SLO, slo_rate=2 * CAPACITY))
    with pytest.raises(GateRefused, match=f"at {2 * CAPACITY:g} req/s missed"):
        aliases.promote(db=db, actor=ADMIN, model="stub", version=1)

    deleted = CliRunner().invoke(cli, ["bench", "delete", str(fixed.id)], env=env, catch_exceptions=False)
    assert deleted.exit_code == 0
    assert [r.id for r in client.benchmarks.list(deployment="knee")] == [created.id]


@pytest.mark.runtime
def test_cove_bench_creates_a_run_on_the_server_and_follows_it(
    api: tuple[Client, dict[str, str]],
) -> None:
    _, env = api
    args = ["bench", "knee", "--concurrency", "2", "--requests", "6", "--output-len", "5", "--words"]
    ran = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    assert re.search(r"benchmark run \d+: knee \(stub v1\), concurrency 2, 6 requests", ran.output)
    assert re.search(r"Successful requests: +6\n", ran.output)
    replica = CliRunner().invoke(cli, [*args, "--replica", "0", "--json"], env=env, catch_exceptions=False)
    run = json.loads(replica.stdout)
    assert (run["target"], run["result"]["steps"][0]["completed"]) == ("replica", 6)
    assert run["result"]["plan"]["url"].startswith("http://127.0.0.1:")


def test_the_benchmarks_page_charts_a_sweep_and_compares_two_runs(
    db: Database,
    knee_deployed: str,
    ui: AppTest,
) -> None:
    at = page(ui, "benchmarks")
    assert "No benchmark runs yet" in texts(at.info)

    def stored(result: BenchResult) -> int:
        spec = BenchSpec.model_validate(result.plan.model_dump(include=set(BenchSpec.model_fields)))
        run = benchmarks.create_benchmark(
            db=db, actor=ADMIN, data=BenchmarkRunCreate(deployment=knee_deployed, spec=spec, tokenizer=False)
        )
        benchmarks.finish(db=db, run_id=run.id, result=result, failure="")
        return run.id

    swept = stored(sweep_result())
    fixed = stored(fixed_result(rate=10, e2el_s=0.2))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    runs = table(at, 0)
    assert [(r["id"], r["status"], r["version"], r["run"]) for r in runs] == [
        (fixed, "Succeeded", "stub v1", "10 req/s constant, 40 requests"),
        (swept, "Succeeded", "stub v1", "sweep over rate for p99_e2el_ms<=300"),
    ]
    assert runs[1]["max rate"] == 20.0
    at.selectbox(key="bench-run").set_value(swept).run()
    assert "SLO limit 300 ms · knee at 20 req/s · max sustainable rate 20 req/s" in texts(at.caption)
    assert "largest rate meeting p99_e2el_ms<=300: 20 req/s" in texts(at.success) + texts(at.warning)
    chart = at.get("vega_lite_chart")[0].proto.spec
    assert chart.count('"type": "rule"') == 2  # the SLO's limit; the knee and the max rate
    assert [r["load"] for r in table(at, 1)] == [f"{r:g} req/s constant" for r in (10, 20, 40, 21)]

    compared = {r["figure"]: r for r in table(at, 2)}
    assert compared["max rate"]["A"] == 20.0  # A: the older run, the sweep
    assert math.isnan(compared["max rate"]["B"])  # a fixed-rate run has none
    assert compared["p50 e2el ms"]["B − A"] == pytest.approx(0.0, abs=1)
