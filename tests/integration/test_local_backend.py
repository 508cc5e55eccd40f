"""The local backend and controller with real processes: crashes, backoff, timeouts, adoption, scaling, deletion."""

from __future__ import annotations

import json
import os

import psutil
import pytest

from studio.backends.local import LocalBackend
from studio.controller import Controller
from studio.db import Database
from studio.kvlog import KvFigures
from studio.services import deployments, events
from studio.settings import Settings
from tests.conftest import make_settings
from tests.integration.conftest import add_fake_image, deploy, runtime_pids, status_of, wait_until
from tests.people import ADMIN


@pytest.mark.runtime
def test_runtime_that_crashes_at_start_is_failed_with_its_last_log_lines(
    db: Database, stub_model: str, controller: Controller
) -> None:
    image = add_fake_image(db, "crashing_runtime.py")
    deploy(db, "crashy", stub_model, image)
    wait_until(lambda: status_of(db, "crashy", "Failed"), timeout=30, what="the deployment to fail")
    dep = deployments.get_deployment(actor=ADMIN, db=db, name="crashy")
    assert "exited with code 1" in dep.message
    assert "3 failed starts in a row" in dep.message
    assert dep.message.endswith(
        "last log lines:\nloading model weights …\ntorch.OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 20.00 GiB (simulated)"
    )  # the runtime's own words, last start only
    reasons = [e.reason for e in events.list_events(db=db, kind="deployment", name="crashy")]
    assert "BackOff" in reasons
    assert "Failed" in reasons


@pytest.mark.runtime
def test_runtime_that_never_becomes_ready_is_killed_and_restarted(tmp_path, stub_model: str, db: Database) -> None:
    settings = make_settings(db_home := tmp_path / "cove", runtime_start_timeout_s=1.5, failure_threshold=2)
    image = add_fake_image(db, "never_ready_runtime.py")
    deploy(db, "stuck", stub_model, image)
    ctl = Controller(db=db, backend=LocalBackend(settings), settings=settings)
    ctl.start()
    try:
        wait_until(lambda: status_of(db, "stuck", "Failed"), timeout=30, what="the start timeout to fail it")
        assert (
            "was not ready after 2 s and was killed"
            in deployments.get_deployment(actor=ADMIN, db=db, name="stuck").message
        )
    finally:
        ctl.stop(stop_workloads=True)
    assert runtime_pids(db_home) == set()


def test_runtime_that_cannot_run_here_fails_at_once_with_the_reason(
    db: Database, stub_model: str, controller: Controller
) -> None:
    deploy(db, "gpu-only", stub_model, image="vllm")
    wait_until(lambda: status_of(db, "gpu-only", "Failed"), timeout=10, what="the deployment to fail")
    message = deployments.get_deployment(actor=ADMIN, db=db, name="gpu-only").message
    assert message.startswith("runtime vllm is not available here")


@pytest.mark.runtime
def test_scale_up_down_and_delete_start_and_stop_processes(
    db: Database, settings: Settings, stub_model: str, controller: Controller
) -> None:
    image = add_fake_image(db, "scripted_runtime.py")
    deploy(db, "web", stub_model, image)
    wait_until(lambda: status_of(db, "web", "Ready"), timeout=30, what="one ready replica")
    deployments.scale_deployment(actor=ADMIN, db=db, name="web", replicas=2)
    dep = wait_until(
        lambda: (d := deployments.get_deployment(actor=ADMIN, db=db, name="web")).ready_replicas == 2 and d,
        timeout=30,
        what="two ready replicas",
    )
    assert len(set(dep.endpoints)) == 2
    assert len(runtime_pids(settings.home)) == 2
    deployments.scale_deployment(actor=ADMIN, db=db, name="web", replicas=0)
    wait_until(
        lambda: status_of(db, "web", "Stopped") and not runtime_pids(settings.home),
        timeout=30,
        what="all replicas to stop",
    )
    deployments.scale_deployment(actor=ADMIN, db=db, name="web", replicas=1)
    wait_until(lambda: status_of(db, "web", "Ready"), timeout=30, what="the replica to come back")
    deployments.delete_deployment(actor=ADMIN, db=db, name="web")
    wait_until(lambda: "web" not in deployments.deployment_names(actor=ADMIN, db=db), timeout=30, what="the row to go")
    assert runtime_pids(settings.home) == set()


@pytest.mark.runtime
def test_a_new_backend_adopts_running_replicas_instead_of_starting_more(
    db: Database, settings: Settings, stub_model: str
) -> None:
    image = add_fake_image(db, "scripted_runtime.py")
    deploy(db, "kept", stub_model, image)
    first = LocalBackend(settings)
    spec = next(d for d in deployments.desired_state(db=db) if d.name == "kept").spec
    wait_until(lambda: first.apply(spec).ready, timeout=30, what="the replica to be ready")
    (pid,) = runtime_pids(settings.home)
    # The controller goes away without stopping anything (as when `cove server` is killed) ...
    first.close(stop_workloads=False)
    second = LocalBackend(settings)
    status = wait_until(lambda: (s := second.apply(spec)).ready and s, timeout=10, what="the adopted replica")
    # ... and the next one takes over the same process: nothing lost, nothing duplicated.
    assert runtime_pids(settings.home) == {pid}
    assert status.ready[0].restarts == 0
    # A replica whose process died while no controller watched is started again.
    psutil.Process(pid).kill()
    psutil.Process(pid).wait(5)
    third = LocalBackend(settings)
    wait_until(lambda: third.apply(spec).ready, timeout=30, what="a new replica")
    assert runtime_pids(settings.home) not in (set(), {pid})
    third.close(stop_workloads=True)
    assert runtime_pids(settings.home) == set()


@pytest.mark.runtime
def test_a_ready_replica_s_kv_figures_are_read_from_its_log_once(
    db: Database, settings: Settings, stub_model: str, controller: Controller
) -> None:
    deploy(db, "kv", stub_model, add_fake_image(db, "kv_logging_runtime.py"))
    dep = wait_until(
        lambda: (d := deployments.get_deployment(actor=ADMIN, db=db, name="kv")).kv_observed and d,
        timeout=30,
        what="the runtime's KV figures",
    )
    assert dep.status == "Ready"
    assert dep.kv_observed == KvFigures(kv_cache_tokens=2_042_016, max_concurrency=997.08, context=2048)
    measured = [e for e in events.list_events(db=db, kind="deployment", name="kv") if e.reason == "Measured"]
    assert [e.message for e in measured] == ["the runtime reports 2,042,016 KV tokens, 997.08 requests of 2,048 tokens"]


@pytest.mark.runtime
def test_a_replica_sees_none_of_cove_s_own_settings(
    db: Database, stub_model: str, controller: Controller, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real replica (a custom command that writes its environment to a file) is started without the database
    URL, the studio's key or the Hub token of the process that starts it, and with what it needs."""
    monkeypatch.setenv("COVE_DATABASE_URL", "postgresql://cove:hunter2@db/cove")
    monkeypatch.setenv("COVE_SECRET_KEY", "the-studio-key")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    image = add_fake_image(db, "env_printing_runtime.py")
    deploy(db, "envy", stub_model, image)

    wait_until(lambda: list(settings.home.glob("env-*.json")), timeout=30, what="the replica to write its env")
    (written,) = settings.home.glob("env-*.json")
    seen = json.loads(written.read_text())

    assert not {"COVE_DATABASE_URL", "COVE_SECRET_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"} & set(seen)
    assert not [name for name in seen if name.startswith("COVE_")]
    assert seen["PATH"] == os.environ["PATH"]
    assert (seen["HF_HUB_OFFLINE"], seen["HF_HUB_CACHE"]) == ("1", str(settings.models_dir))
