"""The playground as its users meet it: `serve(settings)` in its own process, driven with gradio_client, in front of
the real gateway and controller with scripted runtimes ("hello from PORT", word by word): with login off (everyone is
the first admin) and on (each person with their Cove session cookie, chatting with a key of their own). Also the
client and the UI's handlers in-process against the same gateway, for the failures a browser would see."""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.app import Handlers
from playground.chat import (
    NO_MODELS,
    ChatClient,
    GatewayRefused,
    KeyRejected,
    NotLoggedIn,
    PlaygroundClient,
    Sampling,
)
from playground.keys import KEY_LIFETIME, Keyring, studio_keys
from playground.visitors import NOT_LOGGED_IN, CoveVisitors
from studio import sessions
from studio.backends.local import LocalBackend
from studio.bootstrap import open_studio
from studio.controller import Controller
from studio.db import Database
from studio.models import ApiKeyCreate, ApiKeyPublic, ModelCreate
from studio.services import deployments, keys, models, usage, users
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
from tests.people import ADMIN, member

ROOT = Path(__file__).resolve().parents[2]
STATS = re.compile(r"^TTFT \d+ ms · (\d+\.\d tokens/s · )?3 tokens$")  # the scripted runtime reports 3 tokens
SERVE = "from studio.settings import Settings; from playground.app import serve; serve(Settings())"


@contextlib.contextmanager
def playground_process(settings: Settings, log: Path, *, login: bool = False) -> Iterator[str]:
    """`serve(Settings())` in a child process configured like `cove playground` would be; yields its URL once its
    health check answers."""
    port = free_port()
    env = {**cove_env(settings), "COVE_PLAYGROUND_PORT": str(port), "COVE_LOGIN": str(login).lower()}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = settings.local_url(port)
    try:
        wait_until(
            lambda: answers(url + "/healthz") or proc.poll() is not None, timeout=90, what="the playground to start"
        )
        assert proc.poll() is None, log.read_text(errors="replace")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def gradio_client(url: str, cookies: Mapping[str, str] | None = None) -> Iterator[Client]:
    """A gradio_client for the playground at ``url``, sending ``cookies`` with every request."""
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else None
    client = Client(
        url, verbose=False, analytics_enabled=False, headers=headers
    )  # its analytics would try the internet
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def playground(settings: Settings, log: Path) -> Iterator[Client]:
    """A playground with login off (everyone is the first admin), and a gradio_client for it."""
    with playground_process(settings, log) as url, gradio_client(url) as client:
        yield client


class Everyone:
    """Visitors who are all one person, chatting with one given client (the handlers in-process)."""

    def __init__(self, client: ChatClient) -> None:
        self.client_ = client

    def client(self, cookies: Mapping[str, str]) -> ChatClient:
        return self.client_

    def greeting(self, cookies: Mapping[str, str]) -> str:
        return "everyone"


class World(NamedTuple):
    settings: Settings
    db: Database
    gateway: GatewayServer
    key: str  # the admin's, for the in-process tests
    ports: dict[str, str]  # deployment → its replica's port, as the runtime says it
    client: Client  # of a playground with login off
    root: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Gateway, controller, deployments 'alpha' (shared with the group 'team') and 'beta' Ready, a key of the
    admin's, and a playground with login off: shared by the tests."""
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
    deploy(db, "alpha", "stub", image, group="team")
    deploy(db, "beta", "stub", image)
    controller = Controller(db=db, backend=LocalBackend(settings), settings=settings)
    controller.start()
    try:
        with GatewayServer(settings, db) as gateway:
            for name in ("alpha", "beta"):
                wait_until(functools.partial(status_of, db, name, "Ready"), timeout=30, what=f"{name} to be ready")
            ports = {
                n: deployments.get_deployment(actor=ADMIN, db=db, name=n).endpoints[0].rsplit(":", 1)[1]
                for n in ("alpha", "beta")
            }
            key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="in-process")).key
            with playground(settings, root / "playground.log") as client:
                yield World(settings, db, gateway, key, ports, client, root)
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
    with playground(settings, tmp_path / "playground.log") as client:
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
    with playground(settings, tmp_path / "playground.log") as client:
        assert client.predict(api_name="/models") == []
        assert client.predict("Hi", api_name="/chat") == ("", NO_MODELS)  # nothing chosen, nothing to choose
        assert client.predict("Hi", model="gone", api_name="/chat") == ("", NO_MODELS)  # a stale choice
        assert client.predict("Hi", "gone", "gone", api_name="/compare") == ("", NO_MODELS, "", NO_MODELS)


# ------------------------------------------------------------------------------------------------ with login on


class Team(NamedTuple):
    url: str  # of a playground with login on
    cookies: dict[str, dict[str, str]]  # person → their session cookie


@pytest.fixture(scope="module")
def team(world: World) -> Iterator[Team]:
    """Members 'ana' and 'bo' of the group 'team' (which may use 'alpha', not 'beta'), each logged in, and a
    playground with login on in front of the world's gateway."""
    for name in ("ana", "bo"):
        member(world.db, name, "team", password="a long password")
    cookies = {name: {sessions.COOKIE: sessions.issue(world.settings, name)} for name in ("ana", "bo")}
    with playground_process(world.settings, world.root / "playground-login.log", login=True) as url:
        yield Team(url, cookies)


def playground_keys(db: Database, owner: str) -> list[ApiKeyPublic]:
    return [k for k in keys.list_keys(db=db, actor=ADMIN) if k.owner == owner and k.name.startswith("playground-")]


def metered(db: Database, owner: str) -> set[tuple[str, str]]:
    """(key, deployment) pairs with usage, as the owner sees their usage."""
    who = users.principal(db=db, name=owner)
    return {(u.key, u.deployment) for u in usage.usage_summary(db=db, actor=who)}


@pytest.mark.runtime
def test_each_person_chats_with_a_key_of_their_own(world: World, team: Team) -> None:
    for name in ("ana", "bo"):
        with gradio_client(team.url, team.cookies[name]) as client:
            assert client.predict(api_name="/models") == ["alpha"]  # what they may use, not every deployment
            reply, stats = client.predict("Hi", api_name="/chat")
            assert reply == f"hello from {world.ports['alpha']}", stats
            assert "may not use deployment 'beta'" in client.predict("Hi", model="beta", api_name="/chat")[1]
    for name in ("ana", "bo"):
        [key] = [k for k in playground_keys(world.db, name) if k.revoked_at is None]  # made by the playground as them
        assert key.name.startswith(f"playground-{name}-")
        assert key.expires_at is not None
        assert abs(key.expires_at - (key.created_at + KEY_LIFETIME)) < timedelta(minutes=1)
        wait_until(lambda n=name, k=key.name: (k, "alpha") in metered(world.db, n), what=f"{name}'s usage")
        assert {k for k, _ in metered(world.db, name)} == {key.name}  # every call they made went with their key


@pytest.mark.runtime
def test_without_a_session_the_playground_sends_you_to_log_in(world: World, team: Team) -> None:
    page = urllib.request.Request(team.url + "/", headers={"Accept": "text/html"})
    opener = urllib.request.build_opener(NoRedirects)
    with pytest.raises(urllib.error.HTTPError) as redirected:
        opener.open(page, timeout=10)
    redirected.value.close()
    assert redirected.value.code == 303
    assert redirected.value.headers["Location"] == sessions.login_url(world.settings, team.url + "/")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(team.url + "/gradio_api/info"), timeout=10)
    refused.value.close()
    assert refused.value.code == 401
    with pytest.raises(ValueError, match="credentials were not provided"):  # gradio_client cannot even read the API
        Client(team.url, verbose=False, analytics_enabled=False)
    elsewhere = world.settings.model_copy(update={"secret_key": "another cove's key"})
    forged = {sessions.COOKIE: sessions.issue(elsewhere, "ana")}  # signed, but not by this Cove
    with pytest.raises(ValueError, match="credentials were not provided"):
        Client(
            team.url,
            verbose=False,
            analytics_enabled=False,
            headers={"Cookie": f"cove_session={forged['cove_session']}"},
        )


@pytest.mark.runtime
def test_a_disabled_persons_open_page_stops_chatting(world: World, team: Team) -> None:
    member(world.db, "cy", "team")
    with gradio_client(team.url, {sessions.COOKIE: sessions.issue(world.settings, "cy")}) as client:
        assert client.predict("Hi", api_name="/chat")[0] == f"hello from {world.ports['alpha']}"
        users.update_user(db=world.db, actor=ADMIN, name="cy", disabled=True)
        with pytest.raises(httpx.HTTPStatusError, match="401 Unauthorized"):  # a disabled user's session is over
            client.predict("Hi", api_name="/chat")


@pytest.mark.runtime
def test_a_revoked_playground_key_is_replaced_on_the_next_chat(world: World, team: Team) -> None:
    with gradio_client(team.url, team.cookies["ana"]) as client:
        assert client.predict("Hi", api_name="/chat")[0] == f"hello from {world.ports['alpha']}"
        [old] = [k for k in playground_keys(world.db, "ana") if k.revoked_at is None]
        keys.revoke_key(db=world.db, actor=ADMIN, name=old.name)  # an admin revokes it in the studio
        wait_until(
            lambda: old.name not in {k.name for k in world.gateway.app.keys.values()},
            what="the gateway to drop the revoked key",
        )
        reply, stats = client.predict("Hi again", api_name="/chat")
    assert reply == f"hello from {world.ports['alpha']}", stats
    [new] = [k for k in playground_keys(world.db, "ana") if k.revoked_at is None]
    assert new.name != old.name
    wait_until(lambda: (new.name, "alpha") in metered(world.db, "ana"), what="the usage under the new key")


@pytest.mark.runtime  # its fixtures start the gateway, model servers and a playground
def test_the_page_says_who_is_logged_in_and_how_to_log_out(world: World, team: Team) -> None:
    keyring = Keyring(base=PlaygroundClient(gateway_url=world.settings.gateway_url), make_key=studio_keys(world.db))
    on = CoveVisitors(settings=world.settings.model_copy(update={"login": True}), db=world.db, keyring=keyring)
    logout = f"{world.settings.login_base}/auth/logout"
    assert (
        on.greeting(team.cookies["bo"])
        == f'Logged in as <strong>bo</strong> · <a href="{logout}" target="_self">Log out</a>'
    )
    assert on.greeting({}) == NOT_LOGGED_IN
    off = CoveVisitors(settings=world.settings, db=world.db, keyring=keyring)
    assert off.greeting({}) == "Login is off: you chat as <strong>admin</strong>."
    keyring.base.close()


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


# ------------------------------------------------------------------------------------------------ in-process


@pytest.mark.runtime
def test_a_wrong_key_reads_as_refused_with_the_gateways_reason(world: World) -> None:
    client = PlaygroundClient(gateway_url=world.settings.gateway_url, api_key="wrong")
    with pytest.raises(KeyRejected, match="refused the API key: invalid API key: it is unknown or was revoked"):
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
    client = PlaygroundClient(gateway_url=world.settings.gateway_url, api_key=world.key)
    handlers = Handlers(Everyone(client), gateway_url=world.settings.gateway_url)
    prompt, history = handlers.add_turn("Hi", [])
    assert prompt == ""
    steps = list(handlers.respond(history, "beta", "", 0.7, 1.0, 64))
    chatbot, stats, _ = steps[-1]
    assert chatbot == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"hello from {world.ports['beta']}"},
    ]
    assert STATS.match(stats)
    client.close()


def test_ui_gives_an_unanswered_question_back_with_a_warning(tmp_path: Path) -> None:
    down = PlaygroundClient(gateway_url=make_settings(tmp_path).gateway_url, api_key="k")
    handlers = Handlers(Everyone(down), gateway_url=down.gateway_url)
    _, history = handlers.add_turn(
        "Hi", [{"role": "user", "content": "Before"}, {"role": "assistant", "content": "Ok"}]
    )
    with pytest.warns(UserWarning, match="does not answer"):  # gr.Warning outside a Gradio event is a warning
        chatbot, status, prompt = list(handlers.respond(history, "alpha", "", 0.7, 1.0, 64))[-1]
    assert chatbot == history[:-1]
    assert prompt == "Hi"
    assert "does not answer" in status
    down.close()


class Nobody:
    """Visitors whose session ended (or never was): every call is refused."""

    def client(self, cookies: Mapping[str, str]) -> ChatClient:
        raise NotLoggedIn(NOT_LOGGED_IN)

    def greeting(self, cookies: Mapping[str, str]) -> str:
        return NOT_LOGGED_IN


def test_a_visitor_whose_session_ended_is_told_to_log_in_again() -> None:
    handlers = Handlers(Nobody(), gateway_url="http://127.0.0.1:1")
    assert list(handlers.chat("Hi")) == [("", NOT_LOGGED_IN)]
    assert list(handlers.compare("Hi", "alpha", "beta"))[-1] == ("", NOT_LOGGED_IN, "", NOT_LOGGED_IN)
    assert handlers.refresh(None, None, None)[3] == NOT_LOGGED_IN
    with pytest.raises(gr.Error, match="reload the page to log in"):
        handlers.models()
