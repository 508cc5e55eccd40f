"""The promotion gate fed by stored evaluations, and scheduled re-evaluation of production: the real services and
database, evaluations finished through the service as the controller finishes them (no model server), the real
controller on an instant backend with a fake wall clock, and a real HTTP receiver for the webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from studio.controller import Controller
from studio.db import Database, utcnow
from studio.errors import GateRefused, InvalidSpec
from studio.gate import EvalSet, GateConfig, Results
from studio.models import DeploymentCreate, EvaluationCreate, ModelCreate
from studio.scoring import EvalResult, Example, Score, ScorerSpec, aggregate
from studio.services import aliases, deployments, evaluations, events, models, reevaluations
from studio.settings import Settings
from studio.values import JobStatus, Resources
from studio.webhooks import Notifier
from tests.fakes.backends import InstantBackend
from tests.integration.conftest import page, table, texts, wait_until, write_stub_model
from tests.integration.test_cli import run
from tests.integration.test_evaluations import ready  # noqa: F401  (the fixture)
from tests.people import ADMIN

EVALSET = EvalSet(dataset="facts", dataset_version=1, scorers=(ScorerSpec(kind="exact_match"),))
GATE = GateConfig(minimums={"exact_match": 0.8}, max_drop=0.05, evaluation=EVALSET)


@pytest.fixture
def two(ready: Database, tmp_path: Path) -> Database:  # noqa: F811
    """Model 'stub' with v1 (served by 'chat') and v2 (served by 'chat2'), dataset 'facts' v1 with an eval split."""
    models.add_model(
        actor=ADMIN,
        db=ready,
        data=ModelCreate(name="stub", source=str(write_stub_model(tmp_path / "stub2")), new_version=True),
        cache_dir=tmp_path / "cache",
    )
    deployments.create_deployment(
        db=ready,
        actor=ADMIN,
        data=DeploymentCreate(name="chat2", model="stub", model_version=2, resources=Resources(cpu=1)),
    )
    return ready


def scored(db: Database, version: int, deployment: str, score: float, n: int = 10) -> int:
    """An evaluation of stub ``version`` on the gate's set, finished as the controller would, with ``score`` the
    exact-match mean over ``n`` examples; its id."""
    created = evaluations.create_evaluation(
        db=db,
        actor=ADMIN,
        data=EvaluationCreate(
            model="stub",
            model_version=version,
            dataset="facts",
            dataset_version=1,
            deployment=deployment,
            scorers=[ScorerSpec(kind="exact_match")],
        ),
    )
    return scored_as(db, created.id, score, n)


def test_the_gate_passes_and_refuses_from_stored_evaluations_naming_each_source(two: Database) -> None:
    db = two
    aliases.set_gate(db=db, actor=ADMIN, model="stub", gate=GATE)

    with pytest.raises(GateRefused) as refused:
        aliases.promote(db=db, actor=ADMIN, model="stub", version=1)
    assert (
        "min:exact_match: not measured (needs ≥ 0.8) — v1 not evaluated on facts v1 (eval) with exact_match: run "
        "`cove eval run stub:1 --dataset facts:1 --split eval --deployment DEP --scorer exact_match`"
    ) in refused.value.message

    first = scored(db, 1, "chat", 0.9)
    done = aliases.promote(db=db, actor=ADMIN, model="stub", version=1)
    assert [(c["name"], c["passed"], c["source"]) for c in done.checks] == [
        ("min:exact_match", True, f"evaluation {first}, 10 examples"),
        ("drop:exact_match", True, f"candidate: evaluation {first}, 10 examples"),  # no production yet
    ]

    worse = scored(db, 2, "chat2", 0.7)
    verdict, production = aliases.judge(db=db, model="stub", version=2)  # the Models page's preview
    assert (verdict.passed, production) == (False, 1)
    with pytest.raises(GateRefused) as refused:
        aliases.promote(db=db, actor=ADMIN, model="stub", version=2)
    words = refused.value.message
    assert f"min:exact_match: 0.7 < 0.8 — evaluation {worse}, 10 examples" in words
    assert (
        "drop:exact_match: 0.7, -0.2 vs production's 0.9 (allowed -0.05) — "
        f"candidate: evaluation {worse}, 10 examples; production: evaluation {first}, 10 examples"
    ) in words
    assert models.get_model(db=db, name="stub").aliases == {"production": 1}

    with pytest.raises(InvalidSpec, match="not from scores typed in"):  # the numbers come from the evaluations
        aliases.promote(db=db, actor=ADMIN, model="stub", version=2, results={2: Results({"exact_match": 0.95})})

    better = scored(db, 2, "chat2", 0.9)  # the newest evaluation on the set counts
    done = aliases.promote(db=db, actor=ADMIN, model="stub", version=2)
    assert done.checks[0]["source"] == f"evaluation {better}, 10 examples"
    assert models.get_model(db=db, name="stub").aliases == {"production": 2}


def test_a_gate_that_asks_starts_the_missing_evaluations_and_says_so(two: Database) -> None:
    db = two
    aliases.set_gate(db=db, actor=ADMIN, model="stub", gate=GATE.model_copy(update={"start_missing": True}))
    with pytest.raises(GateRefused) as refused:
        aliases.promote(db=db, actor=ADMIN, model="stub", version=1)
    (started,) = evaluations.list_evaluations(db=db, actor=ADMIN, model="stub")
    assert (started.model_version, started.deployment, started.status) == (1, "chat", JobStatus.QUEUED)
    assert f"started evaluation {started.id} of v1 on chat" in refused.value.message

    with pytest.raises(GateRefused) as refused:  # asked again while it runs: no second one
        aliases.promote(db=db, actor=ADMIN, model="stub", version=1)
    assert f"evaluation {started.id} is queued: promote when it ends" in refused.value.message
    assert len(evaluations.list_evaluations(db=db, actor=ADMIN, model="stub")) == 1


def test_cove_model_gate_set_names_the_evaluation_set_and_the_schedule(two: Database, settings: Settings) -> None:
    said = run(
        settings, "model", "gate", "set", "stub", "--min", "exact_match=0.8", "--eval-set", "facts:1",
        "--scorer", "exact_match", "--every-h", "12", "--webhook", "http://hooks.example/cove",
    )  # fmt: skip
    assert said.exit_code == 0, said.output
    assert (
        "gate of stub: exact_match ≥ 0.8; scored on facts v1 (eval) with exact_match; "
        "production re-evaluated every 12 h"
    ) in said.output
    gate = models.get_model(db=two, name="stub").gate
    assert (gate.evaluation, gate.every_h, gate.webhook) == (EVALSET, 12.0, "http://hooks.example/cove")
    refused = run(settings, "model", "gate", "set", "stub", "--every-h", "12")
    assert refused.exit_code == 1
    assert "need an evaluation set" in refused.output


# ------------------------------------------------------------------------------------------- re-evaluation


class Receiver:
    """A webhook receiver on a real port: keeps each JSON body; answers ``status``; the first request waits for
    ``release`` when ``hold`` is set."""

    def __init__(self, status: int = 200, hold: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status, self.release, self.arrived = status, threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                receiver.arrived.set()
                receiver.release.wait(30)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def watching(db: Database, settings: Settings, webhook: str, clock: Clock) -> Controller:
    """v1 promoted on a passing evaluation; the gate re-evaluates production every hour and calls ``webhook``; a
    controller that watches the gate on every pass, with ``clock`` as its wall clock and quick retries."""
    scored(db, 1, "chat", 0.9)
    gate = GATE.model_copy(update={"every_h": 1.0, "webhook": webhook})
    aliases.set_gate(db=db, actor=ADMIN, model="stub", gate=gate)
    aliases.promote(db=db, actor=ADMIN, model="stub", version=1)
    fast = settings.model_copy(update={"gate_watch_s": 1e-6})
    return Controller(
        db=db, backend=InstantBackend(), settings=fast, wall=clock, notifier=Notifier(backoff_s=(0.01, 0.01))
    )


def model_events(db: Database, reason: str) -> list[str]:
    return [e.message for e in events.list_events(db=db, kind="model", name="stub") if e.reason == reason]


def test_production_is_re_evaluated_when_due_and_not_twice(
    two: Database, settings: Settings, receiver: Receiver
) -> None:
    clock = Clock()
    controller = watching(two, settings, receiver.url, clock)
    try:
        controller.reconcile()  # evaluated just now: not due
        assert len(evaluations.list_evaluations(db=two, actor=ADMIN, model="stub", version=1)) == 1

        clock.now += timedelta(hours=1, seconds=1)
        controller.reconcile()
        controller.reconcile()
        newest, _ = evaluations.list_evaluations(db=two, actor=ADMIN, model="stub", version=1)
        assert (newest.deployment, newest.owner, newest.dataset, newest.split) == ("chat", "admin", "facts", "eval")
        assert not newest.status.finished
        assert model_events(two, "Reevaluating") == [f"evaluation {newest.id} of production v1 on chat"]
    finally:
        controller.stop()


def test_a_failing_re_evaluation_marks_the_model_and_calls_the_webhook(
    two: Database, settings: Settings, receiver: Receiver
) -> None:
    clock = Clock()
    controller = watching(two, settings, receiver.url, clock)
    try:
        clock.now += timedelta(hours=2)
        controller.reconcile()
        scheduled = evaluations.list_evaluations(db=two, actor=ADMIN, model="stub", version=1)[0]
        failing = scored_as(two, scheduled.id, 0.5)
        controller.reconcile()
        controller.reconcile()  # judged once: one call, one event

        marked = models.get_model(db=two, name="stub").gate_failing
        assert marked is not None
        assert (marked.version, marked.evaluation, marked.since) == (1, failing, clock.now)
        assert [c["name"] for c in marked.checks] == ["min:exact_match"]
        assert model_events(two, "GateFailing") == [
            f"production v1 fails its gate: min:exact_match: 0.5 < 0.8 — evaluation {failing}, 10 examples"
        ]
        wait_until(lambda: model_events(two, "WebhookSent"), what="the webhook's outcome recorded")
        (body,) = receiver.bodies
        assert body == {
            "event": "gate_failing",
            "model": "stub",
            "version": 1,
            "evaluation": failing,
            "checks": [
                {
                    "name": "min:exact_match",
                    "passed": False,
                    "observed": 0.5,
                    "required": 0.8,
                    "detail": f"0.5 < 0.8 — evaluation {failing}, 10 examples",
                    "source": f"evaluation {failing}, 10 examples",
                }
            ],
            "since": clock.now.isoformat(),
            "link": f"{settings.ui_url}/models",
        }
        assert model_events(two, "WebhookSent") == [f"POST {receiver.url}: 200 after 1 try"]
        shown = run(settings, "model", "get", "stub")
        assert f"GATE FAILING since {clock.now:%Y-%m-%d %H:%M}: production v1, evaluation {failing}" in shown.output
        assert f"FAIL  min:exact_match: 0.5 < 0.8 — evaluation {failing}, 10 examples" in shown.output

        clock.now += timedelta(hours=2)  # the next re-evaluation passes: the mark goes
        controller.reconcile()
        scored_as(two, evaluations.list_evaluations(db=two, actor=ADMIN, model="stub", version=1)[0].id, 0.9)
        controller.reconcile()
        assert models.get_model(db=two, name="stub").gate_failing is None
        assert model_events(two, "GatePassing") == ["production v1 passes again (all 1 checks passed)"]
    finally:
        controller.stop()


def test_a_failing_receiver_is_retried_and_recorded_without_blocking_the_pass(
    two: Database, settings: Settings
) -> None:
    down = Receiver(status=500, hold=True)
    clock = Clock()
    controller = watching(two, settings, down.url, clock)
    try:
        clock.now += timedelta(hours=2)
        controller.reconcile()
        scored_as(two, evaluations.list_evaluations(db=two, actor=ADMIN, model="stub", version=1)[0].id, 0.5)
        controller.reconcile()  # returns while the receiver still holds the first call
        assert down.arrived.wait(30)
        assert not down.release.is_set()
        assert model_events(two, "WebhookFailed") == []
        down.release.set()
        failed = wait_until(lambda: model_events(two, "WebhookFailed"), what="the failed webhook recorded")
        assert failed == [f"POST {down.url} failed after 3 tries: HTTP 500: "]
        assert len(down.bodies) == 3
    finally:
        controller.stop()
        down.close()


def scored_as(db: Database, evaluation_id: int, score: float, n: int = 10) -> int:
    """Finish the (scheduled) evaluation ``evaluation_id`` as the controller would, with ``score`` over ``n``."""
    right = round(score * n)
    examples = [
        Example(
            index=i,
            prompt=[{"role": "user", "content": "Q"}],
            reference="A",
            prediction="A",
            scores={"exact_match": Score(score=1.0 if i < right else 0.0)},
        )
        for i in range(n)
    ]
    result = EvalResult(summary=aggregate(e.scores for e in examples), examples=examples, errors=0, timings={})
    evaluations.finish(db=db, evaluation_id=evaluation_id, result=result, failure="")
    return evaluation_id


def test_the_models_page_judges_from_stored_evaluations_and_shows_production_failing(
    two: Database,
    ui: AppTest,
) -> None:
    scored(two, 1, "chat", 0.9)
    aliases.set_gate(db=two, actor=ADMIN, model="stub", gate=GATE.model_copy(update={"every_h": 24.0}))
    aliases.promote(db=two, actor=ADMIN, model="stub", version=1)
    again = scored(two, 1, "chat", 0.5)
    (alert,) = reevaluations.judge_production(db=two, now=utcnow())
    assert (alert.model, alert.version, alert.evaluation, alert.webhook) == ("stub", 1, again, None)
    candidate = scored(two, 2, "chat2", 0.9)

    at = page(ui, "models")
    assert not at.exception, [e.value for e in at.exception]
    (shown,) = [e.value for e in at.error]
    assert "Production v1 fails its gate since" in shown
    assert f"min:exact_match: 0.5 < 0.8 — evaluation {again}, 10 examples" in shown
    assert "Scores are read from each version's newest evaluation on facts v1 (eval) with exact_match." in texts(
        at.caption
    )
    assert not at.number_input  # nothing to type in: the numbers come from the evaluations
    assert at.selectbox(key="promote-version").value == 2
    (checks,) = [t for t in (table(at, i) for i in range(len(at.dataframe))) if t and "numbers" in t[0]]
    assert checks[0]["numbers"] == f"0.9 ≥ 0.8 — evaluation {candidate}, 10 examples"
    assert not at.button(key="promote").disabled
