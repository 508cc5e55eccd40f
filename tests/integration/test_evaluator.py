"""The evaluation process over real HTTP: rows read as fine-tuning reads them, answers asked of an
OpenAI-compatible server, scored, judged in both orders, and written as result.json by ``python -m
studio.evaluator``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.evaluator import evaluate, examples_of, main
from studio.scoring import Endpoint, EvalPlan, EvalResult, HeldOut, ScorerKind, ScorerSpec
from tests.fakes.first_answer_judge import server

ROWS = [
    ("Paris", "paris."),  # the fake answers with the question: exact match after normalization
    ("The Moon", "moon"),
    ("What is 2+2?", "4"),
    ('{"name": "Ada"}', '{"name": "Ada"}'),
]
SCHEMA = {"type": "object", "required": ["name"]}


@pytest.fixture
def fake() -> Iterator[str]:
    running = server()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{running.server_address[1]}/v1"
    finally:
        running.shutdown()
        running.server_close()


def plan_for(tmp_path: Path, url: str, **fields: object) -> EvalPlan:
    data = tmp_path / "eval.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in ROWS]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"messages": []}\n')  # the last: unfit, skipped
    defaults: dict[str, object] = {
        "evaluation": 1,
        "builder": "json",
        "files": [str(data)],
        "format": "messages",
        "columns": {},
        "candidate": Endpoint(base_url=url, model="candidate", key="k"),
        "scorers": [
            ScorerSpec(kind=ScorerKind.EXACT_MATCH),
            ScorerSpec(kind=ScorerKind.REGEX, pattern=r"\d"),
            ScorerSpec(kind=ScorerKind.JSON_SCHEMA, json_schema=SCHEMA),
        ],
        "output_dir": str(tmp_path / "out"),
    }
    return EvalPlan.model_validate(defaults | fields)


def test_every_row_is_asked_scored_and_kept(tmp_path: Path, fake: str) -> None:
    seen = []
    result = evaluate(plan_for(tmp_path, fake), progress=seen.append)
    assert [(e.prompt[-1]["content"], e.reference, e.prediction) for e in result.examples] == [
        (q, a, q) for q, a in ROWS
    ]
    assert [e.scores["exact_match"].score for e in result.examples] == [1.0, 1.0, 0.0, 1.0]
    assert result.summary["exact_match"].mean == 0.75
    assert result.summary["exact_match"].count == 4
    assert result.summary["regex"].mean == 0.25  # only "What is 2+2?" has a digit
    assert result.summary["json_schema"].mean == 0.25
    assert result.errors == 0
    assert [(p.done, p.total) for p in seen][-1] == (4, 4)
    assert result.timings["total"] > 0


def test_a_judge_that_always_prefers_the_first_answer_ties_every_example(tmp_path: Path, fake: str) -> None:
    plan = plan_for(
        tmp_path,
        fake,
        scorers=[ScorerSpec(kind=ScorerKind.PAIRWISE)],
        judge=Endpoint(base_url=fake, model="judge"),
        against=Endpoint(base_url=fake, model="production"),
    )
    result = evaluate(plan)
    pairwise = result.summary["pairwise"]
    assert (pairwise.ties, pairwise.count) == (4, 4)  # a tie rate of 100 %
    assert pairwise.mean == 0.5
    assert all(e.verdicts == ["A", "A"] for e in result.examples)


def test_a_run_whose_candidate_answers_nothing_fails_saying_why(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "http://127.0.0.1:9/v1", limit=2, timeout_s=2)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.model_dump_json())
    assert main([str(plan_file)]) == 1
    result = EvalResult.model_validate_json((tmp_path / "out" / "result.json").read_text())
    assert result.failure.startswith("the candidate answered none of 2 examples")


def test_the_process_writes_its_result(tmp_path: Path, fake: str) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_for(tmp_path, fake, limit=2).model_dump_json())
    done = subprocess.run([sys.executable, "-m", "studio.evaluator", str(plan_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = EvalResult.model_validate_json((tmp_path / "out" / "result.json").read_text())
    assert [e.prediction for e in result.examples] == ["Paris", "The Moon"]
    assert json.loads((tmp_path / "out" / "progress.json").read_text()) == {"done": 2, "total": 2}


def test_the_held_out_split_is_the_rows_the_trainer_held_out(tmp_path: Path) -> None:
    import datasets

    data = tmp_path / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(20)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = plan_for(tmp_path, "http://unused/v1", files=[str(data)], held_out=HeldOut(fraction=0.2, seed=7))
    # as studio.trainer.load_splits carves them: prompt/completion rows, the same split and seed
    trained = datasets.Dataset.from_list(
        [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in rows]
    ).train_test_split(test_size=4, seed=7)["test"]
    assert [e.reference for e in examples_of(plan)] == [c[0]["content"] for c in trained["completion"]]
