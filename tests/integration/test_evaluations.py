"""Evaluations through the service and the API: checked up front, recorded, listed per model and version without
their examples, shown with them, scored for the promotion gate, deleted; and the whole loop through a real
`cove server` with the demo model deployed, driven by `cove eval` over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from cove.client import Client
from studio.cli import cli
from studio.db import Database
from studio.demo import PAIRS
from studio.errors import Conflict, Forbidden, InvalidSpec
from studio.models import ApiKeyCreate, DeploymentCreate, EvaluationCreate
from studio.scoring import EvalResult, Example, Score, aggregate
from studio.services import deployments, evaluations, keys
from studio.settings import Settings
from studio.values import JobStatus, Resources
from tests.integration.conftest import CoveServer, page, register_demo, table, texts
from tests.integration.test_finetunes import add_dataset
from tests.people import ADMIN, member


@pytest.fixture
def ready(db: Database, settings: Settings, stub_model: str) -> Database:
    version = add_dataset(db, settings)
    folder = Path(version.path)
    (folder / "eval").mkdir()
    (folder / "eval" / "eval.jsonl").write_text((folder / "train" / "train.jsonl").read_text())
    with db.session() as session:
        row = session.get(type(version), version.id)
        assert row is not None
        row.files = {**row.files, "eval": ["eval/eval.jsonl"]}
        session.commit()
    deployments.create_deployment(
        db=db, actor=ADMIN, data=DeploymentCreate(name="chat", model="stub", resources=Resources(cpu=1))
    )
    return db


def ask(db: Database, **fields: object) -> evaluations.EvaluationPublic:
    data = {"model": "stub", "dataset": "facts", "deployment": "chat", "scorers": [{"kind": "exact_match"}]} | fields
    return evaluations.create_evaluation(db=db, actor=ADMIN, data=EvaluationCreate.model_validate(data))


def test_an_evaluation_is_checked_recorded_scored_and_listed_without_its_examples(ready: Database) -> None:
    db = ready
    created = ask(db)
    assert (created.status, created.model, created.model_version, created.split) == (
        JobStatus.QUEUED,
        "stub",
        1,
        "eval",
    )

    with pytest.raises(InvalidSpec, match="does not compile"):
        ask(db, scorers=[{"kind": "regex", "pattern": "(oops"}])
    with pytest.raises(InvalidSpec, match="has no 'test' split") as caught:
        ask(db, split="test")
    assert "train, eval" in caught.value.hint
    with pytest.raises(InvalidSpec, match="needs both a judge"):
        ask(db, judge="chat")
    with pytest.raises(InvalidSpec, match="was not made by a fine-tune"):
        ask(db, split="held_out")

    examples = [
        Example(
            index=0,
            prompt=[{"role": "user", "content": "Q"}],
            reference="A",
            prediction="A",
            scores={"exact_match": Score(score=1.0)},
        ),
        Example(
            index=1,
            prompt=[{"role": "user", "content": "Q"}],
            reference="A",
            prediction="B",
            scores={"exact_match": Score(score=0.0, reason="'b' is not 'a'")},
        ),
        Example(index=2, prompt=[{"role": "user", "content": "Q"}], reference="A", error="timed out"),
    ]
    result = EvalResult(
        summary=aggregate(e.scores for e in examples), examples=examples, errors=1, timings={"total": 1}
    )
    evaluations.finish(db=db, evaluation_id=created.id, result=result, failure="")

    listed = evaluations.list_evaluations(db=db, actor=ADMIN, model="stub", version=1)
    assert [(e.id, e.status, e.summary["exact_match"]["mean"], e.examples) for e in listed] == [
        (created.id, JobStatus.SUCCEEDED, 0.5, [])
    ]
    assert evaluations.list_evaluations(db=db, actor=ADMIN, model="other") == []
    shown = evaluations.get_evaluation(db=db, actor=ADMIN, evaluation_id=created.id)
    assert [(e.prediction, e.error) for e in shown.examples] == [("A", None), ("B", None), (None, "timed out")]
    assert shown.errors == 1
    assert shown.examples[1].scores["exact_match"].reason == "'b' is not 'a'"

    with db.session() as session:  # what the promotion gate reads: the newest succeeded evaluation's means
        assert evaluations.scores_of(session, 1) == {"exact_match": 0.5}
        assert evaluations.scores_of(session, 1, dataset_version_id=99) == {}

    mia = member(db, "mia")
    with pytest.raises(Forbidden, match="owned by admin"):
        evaluations.get_evaluation(db=db, actor=mia, evaluation_id=created.id)
    assert evaluations.list_evaluations(db=db, actor=mia) == []

    queued = ask(db)
    with pytest.raises(Conflict, match="is queued"):
        evaluations.delete_evaluation(db=db, actor=ADMIN, evaluation_id=queued.id)
    evaluations.delete_evaluation(db=db, actor=ADMIN, evaluation_id=created.id)
    assert [e.id for e in evaluations.list_evaluations(db=db, actor=ADMIN)] == [queued.id]


def test_a_failed_run_says_why(ready: Database) -> None:
    created = ask(ready)
    evaluations.finish(db=ready, evaluation_id=created.id, result=None, failure="the process was killed")
    shown = evaluations.get_evaluation(db=ready, actor=ADMIN, evaluation_id=created.id)
    assert (shown.status, shown.message) == (JobStatus.FAILED, "the process was killed")
    with ready.session() as session:
        assert evaluations.scores_of(session, 1) == {}


# ------------------------------------------------------------------------------------------- a real server


@pytest.fixture
def served(
    settings: Settings, db: Database, demo_folder: Path, tmp_path: Path
) -> Iterator[tuple[Client, dict[str, str]]]:
    register_demo(db, settings, demo_folder)
    server = CoveServer(settings, tmp_path / "server.log").start()
    token = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="evals", scopes=["*"])).key
    client = Client(settings.gateway_url, token)
    try:
        yield client, {"COVE_API_URL": settings.gateway_url, "COVE_TOKEN": token, "COVE_HOME": str(settings.home)}
    finally:
        client.close()
        server.stop()


@pytest.mark.runtime
def test_the_demo_model_is_evaluated_through_its_deployment_and_listed(
    served: tuple[Client, dict[str, str]], tmp_path: Path
) -> None:
    client, env = served
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in PAIRS[:4]]
    rows.append({"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Goodbye."}]})
    folder = tmp_path / "qa"
    (folder / "train").mkdir(parents=True)
    (folder / "eval").mkdir()
    for split in ("train", "eval"):
        (folder / split / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    client.datasets.add("qa", str(folder))
    client.deployments.create("demo", "demo-chat")
    client.deployments.wait_ready("demo", timeout=180)

    ran = CliRunner().invoke(
        cli,
        [
            "eval",
            "run",
            "demo-chat",
            "--dataset",
            "qa",
            "--deployment",
            "demo",
            "--scorer",
            "exact_match",
            "--scorer",
            "regex=Cove|Paris|Hello|Hi",
        ],
        env=env,
        catch_exceptions=False,
    )
    assert ran.exit_code == 0, ran.output
    found = list(client.evaluations.list(model="demo-chat", version=1))
    assert len(found) == 1
    assert found[0].status == JobStatus.SUCCEEDED
    em = found[0].summary["exact_match"]
    assert em["count"] == 5
    assert em["mean"] <= 0.8  # "Goodbye." is never what the demo says to "Hello"
    assert f"evaluation {found[0].id}: exact_match {em['mean']:.3f} (n=5)" in ran.output

    shown = client.evaluations.get(found[0].id)
    assert [e.reference for e in shown.examples] == [r["messages"][1]["content"] for r in rows]
    assert all(e.prediction for e in shown.examples)
    assert shown.examples[-1].scores["exact_match"].score == 0.0

    listed = CliRunner().invoke(cli, ["eval", "list", "--model", "demo-chat"], env=env, catch_exceptions=False)
    assert "demo-chat:1" in listed.output
    assert "qa:1" in listed.output
    assert "Succeeded" in listed.output
    assert not [k for k in client.keys.list() if k.name.startswith("eval-") and k.revoked_at is None]


def test_the_models_page_shows_a_versions_evaluations_and_their_examples(ready: Database, ui: AppTest) -> None:
    at = page(ui, "models")
    assert "None yet: `cove eval run stub:1" in texts(at.caption)

    created = ask(ready)
    example = Example(
        index=0,
        prompt=[{"role": "user", "content": "Q"}],
        reference="A",
        prediction="a.",
        scores={"exact_match": Score(score=1.0)},
    )
    result = EvalResult(summary=aggregate([example.scores]), examples=[example], errors=0, timings={})
    evaluations.finish(db=ready, evaluation_id=created.id, result=result, failure="")
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    (row,) = table(at, 1)
    assert (row["id"], row["status"], row["exact_match"], row["dataset"]) == (
        created.id,
        "Succeeded",
        1.0,
        "facts v1 (eval)",
    )
    assert table(at, 2) == [{"#": 0, "prompt": "Q", "reference": "A", "prediction": "a.", "exact_match": 1.0}]
