"""A model server that hangs after it was ready (stopped with SIGSTOP): the controller marks it unhealthy without
stalling its passes, the gateway ends its requests with 504 within the deadline, and other deployments are unaffected.
Real fake-runtime processes, the real controller and the gateway over HTTP."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from studio.controller import Controller
from studio.db import Database
from studio.models import ApiKeyCreate
from studio.services import deployments, keys
from studio.settings import Settings
from tests.conftest import make_settings
from tests.integration.conftest import GatewayServer, add_fake_image, deploy, runtime_pids, status_of, wait_until
from tests.people import ADMIN

DEADLINE_S = 3.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "cove", upstream_deadline_s=DEADLINE_S, runtime_probe_timeout_s=1)


@pytest.fixture
def stopped(db: Database, stub_model: str, controller: Controller) -> Iterator[int]:
    """Deployments 'stuck' and 'fine', both Ready; the pid of stuck's one replica, stopped with SIGSTOP."""
    before = runtime_pids(controller.settings.home)
    deploy(db, "stuck", stub_model, add_fake_image(db, "scripted_runtime.py"))
    wait_until(lambda: status_of(db, "stuck", "Ready"), timeout=30, what="stuck to be ready")
    (pid,) = runtime_pids(controller.settings.home) - before
    deploy(db, "fine", stub_model, add_fake_image(db, "scripted_runtime.py"))
    wait_until(lambda: status_of(db, "fine", "Ready"), timeout=30, what="fine to be ready")
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.killpg(pid, signal.SIGCONT)  # so it can be stopped at teardown


def chat(client: httpx.Client, model: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return client.post("/v1/chat/completions", json=body)


@pytest.mark.runtime
def test_a_hung_model_server_gets_504_within_the_deadline_is_marked_unhealthy_and_others_serve_on(
    db: Database, stopped: int, gateway: GatewayServer
) -> None:
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="app")).key
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
        began = time.monotonic()
        answer = chat(client, "stuck")
        took = time.monotonic() - began
        assert answer.status_code == 504
        assert answer.json()["error"]["type"] == "timeout"
        assert DEADLINE_S - 0.1 <= took < DEADLINE_S + 2
        assert chat(client, "fine").status_code == 200

        # the controller's probes time out: the replica leaves rotation, and its passes go on for the others
        wait_until(
            lambda: "health check failing" in deployments.get_deployment(actor=ADMIN, db=db, name="stuck").message,
            timeout=30,
            what="the hung replica to be marked unhealthy",
        )
        stuck = deployments.get_deployment(actor=ADMIN, db=db, name="stuck")
        assert stuck.status != "Ready"
        assert stuck.endpoints == []
        assert status_of(db, "fine", "Ready")
        began = time.monotonic()
        assert chat(client, "fine").status_code == 200
        assert time.monotonic() - began < 2


@pytest.mark.runtime
def test_a_stream_asked_of_a_server_that_never_answers_ends_with_504_at_the_deadline(
    db: Database, stub_model: str, controller: Controller, gateway: GatewayServer
) -> None:
    """The runtime reads the request and never answers (healthy all the while): the per-read timeout alone (300 s)
    would hold the client; the deadline ends it."""
    deploy(db, "silent", stub_model, add_fake_image(db, "hanging_runtime.py"))
    wait_until(lambda: status_of(db, "silent", "Ready"), timeout=30, what="silent to be ready")
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="app")).key
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        began = time.monotonic()
        answer = chat(client, "silent", stream=True)
        assert time.monotonic() - began < DEADLINE_S + 2
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == 504


@pytest.mark.runtime
def test_a_stream_that_trickles_forever_ends_with_a_504_event_at_the_deadline(
    db: Database, stub_model: str, controller: Controller, gateway: GatewayServer
) -> None:
    """The runtime answers 200, one token, then a keep-alive comment every half second: the per-read timeout never
    fires; the deadline ends the stream, already begun, with an error event in OpenAI's shape."""
    deploy(db, "trickle", stub_model, add_fake_image(db, "trickling_runtime.py"))
    wait_until(lambda: status_of(db, "trickle", "Ready"), timeout=30, what="trickle to be ready")
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="app")).key
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        began = time.monotonic()
        answer = chat(client, "trickle", stream=True)
        took = time.monotonic() - began
    assert answer.status_code == 200
    assert DEADLINE_S - 0.1 <= took < DEADLINE_S + 2
    events = [line.removeprefix("data: ") for line in answer.text.splitlines() if line.startswith("data: ")]
    assert '"one"' in events[0]
    error = json.loads(events[-1])["error"]
    assert error["code"] == 504
    assert "did not finish within 3 s" in error["message"]
