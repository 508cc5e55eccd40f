"""The playground as its users meet it: `serve(settings)` in its own process, driven with gradio_client, in front of
the real gateway and controller with scripted runtimes ("hello from PORT", word by word). Also the client and the
UI's handlers in-process against the same gateway, for the failures a browser would see."""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.app import Handlers
from playground.chat import NO_MODELS, GatewayRefused, KeyRejected, PlaygroundClient, Sampling
from studio.backends.local import LocalBackend
from studio.bootstrap import open_studio
from studio.controller import Controller
from studio.db import Database
from studio.models import ApiKeyCreate, ModelCreate
from studio.services import deployments, keys, models
from studio.settings import Settings
from tests.conftest import free_port, make_settings
from tests.integration.conftest import (
    GatewayServer,
    add_fake_image,
    answers,
    cove_env,
    deploy,
    status_of,
    wait_until,
    write_stub_model,
)
from tests.people import ADMIN

ROOT = Path(__file__).resolve().parents[2]
STATS = re.compile(r"^TTFT \d+ ms · (\d+\.\d tokens/s · )?3 tokens$")  # the scripted runtime reports 3 tokens
SERVE = "from studio.settings import Settings; from playground.app import serve; serve(Settings())"


@contextlib.contextmanager
def playground(settings: Settings, key: str, log: Path) -> Iterator[Client]:
    """`serve(Settings())` in a child process configured like `cove playground` would be; yields a gradio_client."""
    port = free_port()
    env = {**cove_env(settings), "COVE_PLAYGROUND_PORT": str(port), "COVE_PLAYGROUND_API_KEY": key}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = settings.local_url(port)
    try:
        wait_until(lambda: answers(url + "/") or proc.poll() is not None, timeout=90, what="the playground to start")
        assert proc.poll() is None, log.read_text(errors="replace")
        client = Client(url, verbose=False, analytics_enabled=False)  # its analytics would try the internet
        try:
            yield client
        finally:
            client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class World(NamedTuple):
    settings: Settings
    db: Database
    key: str
    ports: dict[str, str]  # deployment → its replica's port, as the runtime says it
    client: Client


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Gateway, controller, deployments 'alpha' and 'beta' Ready, a key, and a playground using it: shared by the
    tests that only read."""
    root = tmp_path_factory.mktemp("playground")
    settings = make_settings(root / "cove")
    db = open_studio(settings)
    models.add_model(
        actor=ADMIN,
        db=db,
        data=ModelCreate(name="stub", source=str(write_stub_model(root / "stub"))),
        cache_dir=root / "cache",
    )
    image = add_fake_image(db, "scripted_runtime.py")
    for name in ("alpha", "beta"):
        deploy(db, name, "stub", image)
    controller = Controller(db=db, backend=LocalBackend(settings), settings=settings)
    controller.start()
    try:
        with GatewayServer(settings, db):
            for name in ("alpha", "beta"):
                wait_until(functools.partial(status_of, db, name, "Ready"), timeout=30, what=f"{name} to be ready")
            ports = {
                n: deployments.get_deployment(actor=ADMIN, db=db, name=n).endpoints[0].rsplit(":", 1)[1]
                for n in ("alpha", "beta")
            }
            key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="playground")).key
            with playground(settings, key, root / "playground.log") as client:
                yield World(settings, db, key, ports, client)
    finally:
        controller.stop(stop_workloads=True)
        db.dispose()


# ------------------------------------------------------------------------------------------------ over gradio_client


@pytest.mark.runtime
def test_chat_streams_the_reply_and_ends_with_stats(world: World) -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    job = world.client.submit("And now?", history, "alpha", "Be brief.", 0.5, 0.9, 32, api_name="/chat")
    outputs = list(job)  # every output the endpoint yielded, in order
    replies = [reply for reply, _ in outputs]
    assert replies[-1] == f"hello from {world.ports['alpha']}"
    assert {"hello", "hello from"} <= set(replies)  # partial text arrived before the whole
    assert all(replies[-1].startswith(r) for r in replies)
    assert STATS.match(outputs[-1][1]), outputs[-1]


@pytest.mark.runtime
def test_chat_needs_only_a_message(world: World) -> None:
    reply, stats = world.client.predict("Hi", api_name="/chat")  # history [], first Ready model, default sampling
    assert reply == f"hello from {world.ports['alpha']}"
    assert STATS.match(stats)


@pytest.mark.runtime
def test_models_lists_the_ready_deployments(world: World) -> None:
    assert world.client.predict(api_name="/models") == ["alpha", "beta"]


@pytest.mark.runtime
def test_compare_streams_both_models_side_by_side(world: World) -> None:
    job = world.client.submit(message="Hi", model_a="alpha", model_b="beta", api_name="/compare")
    outputs = list(job)
    reply_a, stats_a, reply_b, stats_b = outputs[-1]
    assert (reply_a, reply_b) == (f"hello from {world.ports['alpha']}", f"hello from {world.ports['beta']}")
    assert STATS.match(stats_a)
    assert STATS.match(stats_b)
    assert len(outputs) >= 6  # each side's words came one by one


@pytest.mark.runtime
def test_gateway_down_reads_as_a_clear_message(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "cove")  # its gateway port is free: nothing listens there
    with playground(settings, "any-key", tmp_path / "playground.log") as client:
        reply, status = client.predict("Hi", model="alpha", api_name="/chat")
        with pytest.raises(AppError) as raised:
            client.predict(api_name="/models")
    expected = f"The Cove gateway at {settings.gateway_url} does not answer. Start Cove with `make up` (or `cove up`)."
    assert (reply, status) == ("", expected)
    assert str(raised.value) == expected


@pytest.mark.runtime
def test_no_ready_model_reads_as_a_clear_message(
    settings: Settings, db: Database, gateway: GatewayServer, tmp_path: Path
) -> None:
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="playground")).key
    with playground(settings, key, tmp_path / "playground.log") as client:
        assert client.predict(api_name="/models") == []
        assert client.predict("Hi", api_name="/chat") == ("", NO_MODELS)  # nothing chosen, nothing to choose
        assert client.predict("Hi", model="gone", api_name="/chat") == ("", NO_MODELS)  # a stale choice
        assert client.predict("Hi", "gone", "gone", api_name="/compare") == ("", NO_MODELS, "", NO_MODELS)


# ------------------------------------------------------------------------------------------------ in-process


@pytest.mark.runtime
def test_a_wrong_key_says_how_to_set_one(world: World) -> None:
    client = PlaygroundClient(gateway_url=world.settings.gateway_url, api_key="wrong")
    with pytest.raises(KeyRejected, match="COVE_PLAYGROUND_API_KEY"):
        client.models()
    client.close()


@pytest.mark.runtime
def test_other_gateway_errors_pass_their_message_on(world: World) -> None:
    client = PlaygroundClient(gateway_url=world.settings.gateway_url, api_key=world.key)
    with pytest.raises(GatewayRefused) as raised:
        list(client.stream_chat("alpha", [{"role": "user", "content": "bad"}], Sampling()))
    client.close()
    assert raised.value.status == 400
    assert "unsupported value for top_k" in str(raised.value)


@pytest.mark.runtime
def test_ui_streams_into_the_chatbot(world: World) -> None:
    handlers = Handlers(PlaygroundClient(gateway_url=world.settings.gateway_url, api_key=world.key))
    prompt, history = handlers.add_turn("Hi", [])
    assert prompt == ""
    steps = list(handlers.respond(history, "beta", "", 0.7, 1.0, 64))
    chatbot, stats, _ = steps[-1]
    assert chatbot == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"hello from {world.ports['beta']}"},
    ]
    assert STATS.match(stats)
    handlers.client.close()


def test_ui_gives_an_unanswered_question_back_with_a_warning(tmp_path: Path) -> None:
    down = PlaygroundClient(gateway_url=make_settings(tmp_path).gateway_url, api_key="k")
    handlers = Handlers(down)
    _, history = handlers.add_turn(
        "Hi", [{"role": "user", "content": "Before"}, {"role": "assistant", "content": "Ok"}]
    )
    with pytest.warns(UserWarning, match="does not answer"):  # gr.Warning outside a Gradio event is a warning
        chatbot, status, prompt = list(handlers.respond(history, "alpha", "", 0.7, 1.0, 64))[-1]
    assert chatbot == history[:-1]
    assert prompt == "Hi"
    assert "does not answer" in status
    down.close()
