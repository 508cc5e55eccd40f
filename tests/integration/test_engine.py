"""Cove end to end with real parts: `cove server` (gateway + controller) supervising a real `transformers serve`
runtime that loads the demo model from the model cache by repo id, and the real openai SDK as the client.

The tests share one server and one deployment and run in order; each first waits for the deployment to be
Ready, so each also runs alone."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import psutil
import pytest

from studio.bootstrap import open_studio
from studio.db import Database
from studio.demo import PAIRS
from studio.models import ApiKeyCreate, DeploymentCreate, ModelCreate
from studio.services import deployments, events, keys, models, usage
from studio.settings import Settings
from studio.values import Resources
from tests.conftest import make_settings, new_postgres_database
from tests.integration.conftest import (
    CoveServer,
    add_fake_image,
    answers,
    deploy,
    register_demo,
    runtime_pids,
    wait_until,
    write_stub_model,
)
from tests.people import ADMIN

pytestmark = pytest.mark.runtime
ANSWERS = dict(PAIRS)


@dataclass
class Stack:
    settings: Settings
    db: Database
    server: CoveServer
    key: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.settings.gateway_url + "/v1", api_key=self.key, max_retries=0)

    def ready(self) -> deployments.DeploymentPublic:
        return wait_until(
            lambda: (d := deployments.get_deployment(actor=ADMIN, db=self.db, name="demo")).status == "Ready" and d,
            timeout=120,
            what="the demo deployment to be Ready",
        )

    def runtime_pid(self) -> int:
        (pid,) = wait_until(
            lambda: len(p := runtime_pids(self.settings.home)) == 1 and p,
            timeout=30,
            what="exactly one runtime process",
        )
        return pid


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_folder: Path) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("engine") / "cove"
    settings = make_settings(home)
    db = open_studio(settings)
    register_demo(db, settings, demo_folder)
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="tester")).key
    deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=DeploymentCreate(name="demo", model="demo-chat", resources=Resources(cpu=1, memory_mib=1024)),
    )
    server = CoveServer(settings, home.parent / "server.log").start()
    stack = Stack(settings, db, server, key)
    try:
        yield stack
    finally:
        if stack.server.proc and stack.server.proc.poll() is None:
            stack.server.stop()
        for pid in runtime_pids(home):  # only if a test failed half-way
            os.kill(pid, signal.SIGKILL)
        db.dispose()


def test_the_demo_model_answers_through_the_gateway(stack: Stack) -> None:
    stack.ready()
    with stack.client() as client:
        reply = client.chat.completions.create(
            model="demo", temperature=0, messages=[{"role": "user", "content": "What is Cove?"}]
        )
    assert reply.choices[0].message.content == ANSWERS["What is Cove?"]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "demo"
    assert reply.usage.completion_tokens > 5


def test_streaming_matches_and_usage_is_metered_per_key(stack: Stack) -> None:
    stack.ready()

    def streamed() -> list:
        return [r for r in usage.usage_records(db=stack.db, deployment="demo") if r.stream]

    before = len(streamed())
    question = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of Japan?"}]},
    ]
    with stack.client() as client:
        stream = client.chat.completions.create(
            model="demo", temperature=0, messages=question, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWERS["What is the capital of Japan?"]
    final = chunks[-1].usage
    records = wait_until(lambda: len(r := streamed()) == before + 1 and r, timeout=10, what="the stream's usage record")
    newest = records[0]
    assert (newest.stream, newest.status_code, newest.estimated) == (True, 200, False)
    assert (newest.prompt_tokens, newest.completion_tokens) == (final.prompt_tokens, final.completion_tokens)
    assert newest.api_key_id == next(iter(keys.active_keys(db=stack.db).values())).id
    assert newest.ttft_ms is not None


def test_runtime_killed_mid_stream_gives_a_clean_error_and_comes_back(stack: Stack) -> None:
    stack.ready()
    pid = stack.runtime_pid()

    def broken() -> list:
        return [r for r in usage.usage_records(db=stack.db, deployment="demo") if r.status_code == 502]

    with stack.client() as client:
        stream = client.completions.create(model="demo", prompt="Hello", max_tokens=400, temperature=0, stream=True)
        received = []
        with pytest.raises(openai.APIError, match="stopped mid-stream"):  # noqa: PT012
            for chunk in stream:
                received.append(chunk.choices[0].text)
                if len(received) == 1:
                    os.kill(pid, signal.SIGSTOP)  # freeze it at once, then kill it as the OOM killer would
                    os.kill(pid, signal.SIGKILL)
    assert 1 <= len(received) < 100
    (record,) = wait_until(broken, timeout=10, what="the broken stream's usage record")
    assert len(broken()) == 1  # recorded once, not once per retry or per chunk
    assert record.completion_tokens >= 1  # what was streamed before the crash is still metered
    # the controller notices, restarts the replica with backoff, and it serves again
    new_pid = wait_until(
        lambda: (p := runtime_pids(stack.settings.home)) and p != {pid} and p, timeout=60, what="a new runtime process"
    )
    dep = stack.ready()
    assert dep.ready_replicas == 1
    assert new_pid != {pid}
    assert any(
        e.reason == "BackOff" and "was killed by SIGKILL after it was ready" in e.message
        for e in events.list_events(db=stack.db, kind="deployment", name="demo")
    )
    with stack.client() as client:
        reply = client.chat.completions.create(
            model="demo", temperature=0, messages=[{"role": "user", "content": "Hello"}]
        )
    assert reply.choices[0].message.content == ANSWERS["Hello"]


def test_a_killed_server_is_replaced_without_losing_or_duplicating_replicas(stack: Stack) -> None:
    stack.ready()
    pid = stack.runtime_pid()
    stack.server.kill()  # SIGKILL: no chance to stop anything
    assert psutil.pid_exists(pid)
    assert not answers(stack.settings.gateway_url + "/healthz")
    stack.server.start()
    dep = stack.ready()
    assert runtime_pids(stack.settings.home) == {pid}  # adopted, not started again
    assert len(dep.endpoints) == 1
    assert dep.ready_replicas == 1
    with stack.client() as client:
        reply = client.chat.completions.create(
            model="demo", temperature=0, messages=[{"role": "user", "content": "Thank you"}]
        )
    assert reply.choices[0].message.content == ANSWERS["Thank you"]
    assert "adopted running pid" in stack.server.log()


def test_a_stopped_server_stops_its_replicas(stack: Stack) -> None:
    stack.ready()
    pid = stack.runtime_pid()
    assert stack.server.stop() == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert runtime_pids(stack.settings.home) == set()
    assert "stopping the controller and local replicas" in stack.server.log()


@pytest.mark.postgres
def test_cove_server_runs_on_postgresql(tmp_path: Path, postgres: str) -> None:
    settings = make_settings(tmp_path / "cove", database_url=new_postgres_database(postgres))
    db = open_studio(settings)
    try:
        models.add_model(
            actor=ADMIN,
            db=db,
            data=ModelCreate(name="stub", source=str(write_stub_model(tmp_path / "stub"))),
            cache_dir=settings.models_dir,
        )
        key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="pg")).key
        deploy(db, "on-pg", "stub", add_fake_image(db, "scripted_runtime.py"))
        server = CoveServer(settings, tmp_path / "server.log").start()
        try:
            wait_until(
                lambda: deployments.get_deployment(actor=ADMIN, db=db, name="on-pg").status == "Ready",
                timeout=30,
                what="the deployment to be Ready",
            )
            with openai.OpenAI(base_url=settings.gateway_url + "/v1", api_key=key, max_retries=0) as client:
                reply = client.chat.completions.create(model="on-pg", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content.startswith("hello from")
            wait_until(lambda: usage.usage_records(db=db, deployment="on-pg"), timeout=10, what="metered usage")
        finally:
            assert server.stop() == 0
        assert runtime_pids(settings.home) == set()
    finally:
        db.dispose()
