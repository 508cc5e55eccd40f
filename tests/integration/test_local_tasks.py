"""Run-to-completion tasks as real local processes (studio.backends.tasks): how they end, what survives a restarted
control plane, and stopping them."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from studio.backends.base import TaskSpec, TaskState
from studio.backends.environment import WITHHELD
from studio.backends.tasks import LocalTasks
from studio.settings import Settings
from tests.integration.conftest import wait_until


def task(name: str, script: str, tmp: Path) -> TaskSpec:
    return TaskSpec(name=name, command=("sh", "-c", script), workdir=str(tmp / "work" / name))


def ended(tasks: LocalTasks, spec: TaskSpec) -> TaskState | None:
    state = tasks.run(spec)
    return None if state.phase == "running" else state


def test_a_task_runs_once_and_its_success_is_kept(settings: Settings, tmp_path: Path) -> None:
    tasks = LocalTasks(settings)
    spec = task("ok", "echo trained; exit 0", tmp_path)

    assert tasks.run(spec).phase == "running"
    state = wait_until(lambda: ended(tasks, spec), timeout=10, what="the task to end")

    assert state == TaskState("succeeded", exit_code=0)
    assert tasks.run(spec).phase == "succeeded"  # not started again
    assert "trained" in tasks.logs("ok")
    assert tasks.names() == {"ok"}


def test_a_failure_says_its_exit_code_with_the_last_lines_of_its_log(settings: Settings, tmp_path: Path) -> None:
    tasks = LocalTasks(settings)
    spec = task("bad", "echo 'CUDA out of memory' >&2; exit 3", tmp_path)
    tasks.run(spec)

    state = wait_until(lambda: ended(tasks, spec), timeout=10, what="the task to end")

    assert (state.phase, state.message, state.exit_code) == ("failed", "the process exited with code 3", 3)
    assert "CUDA out of memory" in state.log_tail


def test_a_task_that_ends_while_no_controller_watches_is_still_known_to_have_succeeded(
    settings: Settings, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    spec = task("long", f"while [ ! -e {go} ]; do sleep 0.05; done; exit 0", tmp_path)
    first = LocalTasks(settings)
    first.run(spec)
    first.close(stop_tasks=False)  # the control plane stops; the task runs on

    adopted = LocalTasks(settings)
    assert adopted.names() == {"long"}
    assert adopted.run(spec).phase == "running"
    go.touch()

    state = wait_until(lambda: ended(adopted, spec), timeout=10, what="the adopted task to end")
    assert state.phase == "succeeded"


def test_a_task_killed_outright_is_failed_as_killed(settings: Settings, tmp_path: Path) -> None:
    tasks = LocalTasks(settings)
    spec = task("victim", "sleep 60", tmp_path)
    tasks.run(spec)
    pid = int((settings.tasks_dir / "victim" / "state.json").read_text().split('"pid": ')[1].split(",")[0])

    os.killpg(pid, signal.SIGKILL)  # the machine's OOM killer, or kill -9: nothing is written

    state = wait_until(lambda: ended(tasks, spec), timeout=10, what="the task to end")
    assert state.phase == "failed"
    assert state.message.startswith("the process was killed")
    assert state.exit_code is None


def test_stop_asks_the_program_to_stop_and_forgets_the_task(settings: Settings, tmp_path: Path) -> None:
    tasks = LocalTasks(settings)
    marker, listening = tmp_path / "saved", tmp_path / "listening"
    script = f"trap 'touch {marker}; exit 143' TERM; touch {listening}; while true; do sleep 0.05; done"
    tasks.run(task("tune", script, tmp_path))
    wait_until(listening.exists, timeout=10, what="the program to listen for SIGTERM")

    wait_until(lambda: tasks.stop("tune"), timeout=10, what="the task to stop")

    assert marker.exists()  # it was told (SIGTERM) and had its say: the trainer saves a checkpoint here
    assert tasks.names() == set()
    assert not (settings.tasks_dir / "tune").exists()


# The task loads the modules a trainer, an evaluator and a benchmark run load, then writes what it was given.
ENV_WRITING = (
    "import json, os, studio.trainer, studio.evaluator, studio.bench; "
    "json.dump(dict(os.environ), open('env.json', 'w'))"
)


def test_a_task_sees_none_of_cove_s_own_settings_and_what_its_spec_gives_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real task process (Python, importing the task programs) started without the database URL, the studio's key
    or the Hub token of the process that starts it; with its spec's variables, its folder and what Python needs."""
    monkeypatch.setenv("COVE_DATABASE_URL", "postgresql://cove:hunter2@db/cove")
    monkeypatch.setenv("COVE_SECRET_KEY", "the-studio-key")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    tasks = LocalTasks(settings)
    spec = TaskSpec(
        name="envy",
        command=(sys.executable, "-c", ENV_WRITING),
        workdir=str(tmp_path / "work"),
        env=(("HF_HUB_OFFLINE", "1"), ("OMP_NUM_THREADS", "1")),
    )
    tasks.run(spec)

    state = wait_until(lambda: ended(tasks, spec), timeout=60, what="the task to end")
    assert state.phase == "succeeded", tasks.logs("envy")
    seen = json.loads((settings.tasks_dir / "envy" / "env.json").read_text())

    assert not {"COVE_DATABASE_URL", "COVE_SECRET_KEY", "AWS_SECRET_ACCESS_KEY", *WITHHELD} & set(seen)
    assert [name for name in seen if name.startswith("COVE_")] == ["COVE_TASK_DIR"]
    assert seen["COVE_TASK_DIR"] == str(settings.tasks_dir / "envy")
    assert (seen["HF_HUB_OFFLINE"], seen["OMP_NUM_THREADS"], seen["HF_HOME"]) == ("1", "1", str(tmp_path / "hf"))
    assert seen["CUDA_VISIBLE_DEVICES"] == ""  # a CPU task
    assert seen["PATH"] == os.environ["PATH"]
