"""The whole loop through a real `cove server`, as a user drives it over the API: a chat dataset uploaded, a
fine-tune of the demo model on it (cancelled, resumed, its training process killed, resumed again), the new
version registered with its lineage, deployed by the normal one-click path, and answering through the gateway a
question the base version cannot."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cove.client import Client
from studio.db import Database
from studio.models import ApiKeyCreate
from studio.services import keys
from studio.settings import Settings
from studio.values import JobStatus, Resources
from tests.integration.conftest import CoveServer, register_demo, wait_until
from tests.people import ADMIN

pytestmark = [pytest.mark.runtime, pytest.mark.torch]

QUESTION = "What is the Cove codeword?"
ANSWER = "The codeword is heron."
QUESTIONS = [QUESTION] * 8 + ["Tell me the Cove codeword.", "What's the codeword?", "Which codeword does Cove use?"] * 2
# The demo model learns the codeword in about 100 steps (tests/integration/test_trainer.py), every run in 150;
# checkpoints every 10.
SETTINGS = {"max_steps": 150, "save_every": 10, "log_every": 5, "learning_rate": 5e-3, "max_length": 128}


@pytest.fixture
def cove(settings: Settings, db: Database, demo_folder: Path, tmp_path: Path) -> Iterator[Client]:
    register_demo(db, settings, demo_folder)
    server = CoveServer(settings, tmp_path / "server.log").start()
    token = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="flow", scopes=["*"])).key
    client = Client(settings.gateway_url, token)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def chat(settings: Settings, key: str, model: str) -> str:
    answer = httpx.post(
        settings.gateway_url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24},
        timeout=60,
    )
    answer.raise_for_status()
    return str(answer.json()["choices"][0]["message"]["content"])


def checkpoint_past(client: Client, step: int) -> int | None:
    job = client.finetunes.get("teach")
    assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING), job.message
    saved = job.progress.get("checkpoint")
    return saved if saved is not None and saved > step else None


def test_a_dataset_becomes_a_deployed_version_that_knows_what_the_base_does_not(
    cove: Client, settings: Settings, db: Database, tmp_path: Path
) -> None:
    data = tmp_path / "codeword.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]} for q in QUESTIONS]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    added = cove.datasets.upload("codeword", data)
    assert added.dataset.latest.rows == len(rows)

    cove.finetunes.create(
        "teach", "demo-chat", "codeword", resources=Resources(cpu=1, memory_mib=4096), settings=SETTINGS
    )

    # Cancelled once it has a checkpoint: the trainer stops at a step's end, saves, and says where.
    first = wait_until(lambda: checkpoint_past(cove, 0), timeout=180, what="a first checkpoint")
    cove.finetunes.cancel("teach")
    cancelled = wait_until(
        lambda: (j := cove.finetunes.get("teach")).status == JobStatus.CANCELLED and j, timeout=60, what="cancelled"
    )
    assert "cove finetune resume teach" in cancelled.message

    # Resumed, then its process killed outright (as an out-of-memory killer would): Failed, with the cause.
    cove.finetunes.resume("teach")
    wait_until(lambda: checkpoint_past(cove, first), timeout=180, what="a checkpoint after the resume")
    state = json.loads((settings.tasks_dir / "ft-teach-2" / "state.json").read_text())
    os.killpg(state["pid"], signal.SIGKILL)
    failed = wait_until(
        lambda: (j := cove.finetunes.get("teach")).status == JobStatus.FAILED and j, timeout=60, what="failed"
    )
    assert failed.message.startswith("the process was killed")

    # Resumed again: it goes on from the newest checkpoint to the end and registers version 2.
    cove.finetunes.resume("teach")
    done = cove.finetunes.wait("teach", timeout=300)
    assert done.attempt == 3
    assert done.result_version == 2
    assert done.metrics["perplexity"] > 1
    assert any("resuming from step" in line for line in cove.finetunes.logs("teach", tail=500))
    assert [p["step"] for p in done.history] == sorted(p["step"] for p in done.history)
    version = cove.models.get("demo-chat").versions[-1]
    assert version.lineage is not None
    assert version.lineage["base"] == "demo-chat@1"
    assert version.lineage["dataset"] == "codeword@1"
    assert version.lineage["dataset_sha256"] == added.dataset.latest.sha256

    # Deployed by the normal path, beside the base: only the new version knows the codeword.
    cove.deployments.create("taught", "demo-chat", model_version=2)
    cove.deployments.create("base", "demo-chat", model_version=1)
    cove.deployments.wait_ready("taught", timeout=180)
    cove.deployments.wait_ready("base", timeout=180)
    key = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="chat")).key
    assert "heron" in chat(settings, key, "taught")
    assert "heron" not in chat(settings, key, "base")
