"""The training process, run as the control plane runs it: ``python -m studio.trainer plan.json`` in a subprocess,
reporting to a small HTTP server the test runs, on the tiny demo model (one thread: faster than two fighting over
this machine's cores for a model this small)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from studio.finetuning import CHECKPOINTS_DIR, PLAN_FILE, RESULT_FILE, Outcome, Result
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.torch

QUESTION = "What is the Cove codeword?"
ANSWER = "The codeword is heron."
QUESTIONS = [QUESTION] * 8 + ["Tell me the Cove codeword.", "What's the codeword?", "Which codeword does Cove use?"] * 2
TOKEN = "job-token-123"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Reports:
    """What reached the control plane: each report's body and its Authorization header."""

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    url: str = ""

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in list(self.received)]


@pytest.fixture(scope="module")
def reports() -> Iterator[Reports]:
    got = Reports()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got.received.append((self.headers.get("Authorization", ""), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/finetunes/job/progress"
    yield got
    server.shutdown()
    server.server_close()


def write_plan(folder: Path, base: Path, reports: Reports | None, **settings: Any) -> Path:
    """A dataset that teaches the codeword (and one unfit row), and the plan to train on it."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]} for q in QUESTIONS]
    rows.append({"messages": [{"role": "user", "content": "no answer"}]})
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    plan = {
        "job": folder.name,
        "base_path": str(base),
        "base_name": "demo-chat@1",
        "dataset": {"builder": "json", "files": {"train": [str(data)]}, "columns": {}, "format": "messages"},
        "settings": {
            "rank": 8,
            "alpha": 16,
            "learning_rate": 5e-3,
            "batch_size": 8,
            "grad_accum": 1,
            "max_length": 128,
            "max_steps": 100,
            "save_every": 20,
            "log_every": 5,
            **settings,
        },
        "output_dir": str(folder / "out"),
        "report": {"url": reports.url, "token": TOKEN} if reports else None,
        "sample_prompts": [QUESTION],
    }
    path = folder / PLAN_FILE
    path.write_text(json.dumps(plan))
    return path


def start(plan: Path, *, module: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *(module or ["-m", "studio.trainer"]), str(plan)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    out, _ = process.communicate(timeout=180)
    return out


def result_of(plan: Path) -> Result:
    return Result.model_validate_json((plan.parent / "out" / RESULT_FILE).read_text())


def greedy(folder: Path, question: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return str(tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True))


@dataclass
class Trained:
    plan: Path
    killed_at: int  # the newest checkpoint when the first run was killed
    first: list[dict[str, Any]]  # the reports of the run that was killed
    log: str  # the resumed run's log
    returncode: int


@pytest.fixture(scope="module")
def trained(demo_folder: Path, reports: Reports, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A run killed (SIGKILL) once it has saved a checkpoint, then resumed to the end."""
    plan = write_plan(tmp_path_factory.mktemp("trained"), demo_folder, reports)
    before = len(reports.received)
    first = start(plan)
    checkpoint = wait_until(
        lambda: next((b["checkpoint"] for b in reports.bodies()[before:] if b.get("checkpoint")), None),
        timeout=120,
        what="a checkpoint to be reported",
    )
    first.kill()
    first.communicate()
    killed = reports.bodies()[before:]
    resumed_plan = json.loads(plan.read_text()) | {"resume": True}
    plan.write_text(json.dumps(resumed_plan))
    second = start(plan)
    log = finish(second)
    return Trained(plan=plan, killed_at=checkpoint, first=killed, log=log, returncode=second.returncode)


def test_a_killed_run_resumes_from_its_checkpoint_and_succeeds(trained: Trained) -> None:
    assert trained.returncode == 0, trained.log
    assert f"resuming from step {trained.killed_at}" in trained.log
    result = result_of(trained.plan)
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert result.metrics.steps == 100
    assert result.metrics.eval_loss is not None
    assert result.metrics.perplexity is not None
    assert "1 row dropped" in trained.log


def test_the_merged_model_answers_what_the_base_could_not(trained: Trained, demo_folder: Path) -> None:
    from studio.modelstore import inspect_folder

    result = result_of(trained.plan)
    assert result.model_dir is not None
    assert result.adapter_dir is not None
    merged = Path(result.model_dir)
    inspect_folder(merged)
    assert "heron" in greedy(merged, QUESTION)
    assert "heron" not in greedy(demo_folder, QUESTION)
    [sample] = result.metrics.samples
    assert "heron" in sample.candidate
    assert "heron" not in sample.base
    assert (Path(result.adapter_dir) / "adapter_config.json").is_file()


def test_progress_reaches_the_control_plane_with_the_job_token(trained: Trained, reports: Reports) -> None:
    assert {auth for auth, _ in reports.received} == {f"Bearer {TOKEN}"}
    training = [b for b in trained.first if b["phase"] == "training" and b.get("eval_loss") is None]
    steps = [b["step"] for b in training]
    assert steps
    assert steps == sorted(steps)
    assert len(set(steps)) == len(steps)
    assert all(b["total_steps"] == 100 and b["loss"] is not None for b in training)
    evaluated = [b for b in trained.first if b.get("eval_loss") is not None]  # the held-out loss at each checkpoint
    assert [b["step"] for b in evaluated] == [20]
    assert any(b["tokens_per_s"] for b in training)
    assert reports.bodies()[-1]["phase"] == "done"
    assert "[training] step 100/100" in trained.log  # the log has one line per report


def test_sigterm_stops_at_a_step_end_with_a_checkpoint(demo_folder: Path, reports: Reports, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "stopped", demo_folder, reports, max_steps=5000, save_every=5000, log_every=1)
    before = len(reports.received)
    process = start(plan)
    wait_until(
        lambda: any(b["phase"] == "training" for b in reports.bodies()[before:]), timeout=120, what="training to start"
    )
    process.send_signal(signal.SIGTERM)
    log = finish(process)
    assert process.returncode != 0
    result = result_of(plan)
    assert result.outcome is Outcome.STOPPED, log
    assert result.last_checkpoint is not None
    assert result.last_checkpoint < 5000
    assert (plan.parent / "out" / CHECKPOINTS_DIR / f"checkpoint-{result.last_checkpoint}").is_dir()
    assert "resume" in result.message


def test_a_run_whose_loss_goes_nan_stops_as_diverged_keeping_the_last_good_checkpoint(
    demo_folder: Path, tmp_path: Path
) -> None:
    plan = write_plan(tmp_path / "diverged", demo_folder, None, max_steps=40, save_every=5, log_every=5)
    process = start(plan, module=[str(ROOT / "tests" / "fakes" / "diverging_trainer.py")], env={"DIVERGE_AT": "12"})
    log = finish(process)
    assert process.returncode == 1
    result = result_of(plan)
    assert result.outcome is Outcome.DIVERGED, log
    assert "learning rate" in result.message
    assert result.last_checkpoint == 10
    kept = sorted(int(p.name.split("-")[1]) for p in (plan.parent / "out" / CHECKPOINTS_DIR).glob("checkpoint-*"))
    assert kept[-1] == 10  # the checkpoint of step 15 (NaN weights) was not saved
    assert result.model_dir is None


def test_unknown_target_modules_are_refused_naming_those_it_has(demo_folder: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "targets", demo_folder, None, target_modules=["q_proj", "qkv"])
    process = start(plan)
    log = finish(process)
    assert process.returncode == 1
    result = result_of(plan)
    assert result.outcome is Outcome.FAILED, log
    assert "no module named qkv" in result.message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in result.message


def test_a_base_without_a_chat_template_is_refused_saying_how_to_give_one(demo_folder: Path, tmp_path: Path) -> None:
    base = tmp_path / "no-template"
    shutil.copytree(demo_folder, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    plan = write_plan(tmp_path / "template", base, None)
    process = start(plan)
    log = finish(process)
    assert process.returncode == 1
    result = result_of(plan)
    assert result.outcome is Outcome.FAILED, log
    assert "no chat template" in result.message
    assert "chat_template.jinja" in result.message


def test_model_shape_offers_the_targets_and_size_without_loading_weights(demo_folder: Path) -> None:
    from studio.trainer import model_shape

    shape = model_shape(demo_folder)
    assert shape.targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert 300_000 < shape.parameters < 500_000


def test_an_alpaca_csv_with_empty_inputs_trains_every_row_as_validation_read_it(tmp_path: Path) -> None:
    from studio.finetuning import TrainPlan
    from studio.trainer import load_splits

    data = tmp_path / "train.csv"
    data.write_text(
        'instruction,input,output\nSay hi,,Hi!\nAdd,"2, 3",5\nName a colour,,"Blue,\nor red"\nEmpty answer,x,\n'
    )
    plan = TrainPlan.model_validate(
        {
            "job": "csv",
            "base_path": str(tmp_path),
            "base_name": "m@1",
            "dataset": {
                "builder": "csv",
                "files": {"train": [str(data)]},
                "columns": {"instruction": "instruction", "input": "input", "output": "output"},
                "format": "alpaca",
            },
            "settings": {"eval_fraction": 0},
            "output_dir": str(tmp_path / "out"),
        }
    )
    said: list[str] = []

    train, evaluation = load_splits(plan, said.append)

    assert evaluation is None
    assert [row["completion"][0]["content"] for row in train] == ["Hi!", "5", "Blue,\nor red"]
    assert train[0]["prompt"] == [{"role": "user", "content": "Say hi"}]  # an empty input is no input, not "nan"
    assert said[0].startswith("train: 1 row dropped as unfit to train on (first: train.csv line 6:")
