"""The gateway over HTTP with the real openai SDK: routing, streaming, usage metering, metrics and every error a
client can meet. Replicas are fake runtimes supervised by the real controller; where a test needs an exact failure
(a dead or hanging replica) it plays the controller and writes the observed state itself."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from sqlmodel import select

from studio.backends.local import LocalBackend
from studio.controller import Controller
from studio.db import Database, utcnow
from studio.models import ApiKey, ApiKeyCreate, Observed
from studio.services import deployments, keys, usage, users
from studio.settings import Settings
from studio.values import Principal, Status
from tests.conftest import free_port, make_settings
from tests.fakes import FAKES
from tests.integration.conftest import GatewayServer, add_fake_image, answers, deploy, status_of, wait_until
from tests.people import ADMIN, member


@pytest.fixture
def key(db: Database) -> str:
    return keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="app")).key


@pytest.fixture
def chat(db: Database, stub_model: str, controller: Controller) -> str:
    """A deployment 'chat' of the scripted runtime, Ready."""
    deploy(db, "chat", stub_model, add_fake_image(db, "scripted_runtime.py"))
    wait_until(lambda: status_of(db, "chat", "Ready"), timeout=30, what="chat to be ready")
    return "chat"


@pytest.fixture
def client(gateway: GatewayServer, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
        yield c


def _replica_port(db: Database, name: str) -> str:
    return deployments.get_deployment(actor=ADMIN, db=db, name=name).endpoints[0].rsplit(":", 1)[1]


def play_ready(db: Database, name: str, endpoints: list[str]) -> None:
    """Write what a controller would: the deployment is Ready at these endpoints."""
    dep = next(d for d in deployments.desired_state(db=db) if d.name == name)
    deployments.record_observed(
        db=db,
        name=name,
        generation=dep.generation,
        events=[],
        observed=Observed(status=Status.READY, ready_replicas=len(endpoints), endpoints=endpoints, upstream_model=name),
    )


# ------------------------------------------------------------------------------------------------ happy paths


@pytest.mark.runtime
def test_chat_is_routed_renamed_metered_and_timed(db: Database, chat: str, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=chat, messages=[{"role": "user", "content": "hi"}])
    reply = raw.parse()
    assert reply.choices[0].message.content == f"hello from {_replica_port(db, chat)}"
    assert reply.model == "chat"  # the client sees the deployment's name, not the runtime's
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 3)
    assert 0 < float(raw.headers["x-cove-overhead-ms"]) < 100


@pytest.mark.runtime
def test_stream_hides_usage_unless_asked_and_always_ends_with_done(
    db: Database, chat: str, gateway: GatewayServer, client: openai.OpenAI, key: str
) -> None:
    chunks = list(client.chat.completions.create(model=chat, stream=True, messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        f"hello from {_replica_port(db, chat)}"
    )
    assert all(c.usage is None for c in chunks)
    with_usage = list(
        client.chat.completions.create(
            model=chat,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hi"}],
        )
    )
    assert (with_usage[-1].usage.prompt_tokens, with_usage[-1].usage.completion_tokens) == (7, 3)
    body = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": chat, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ).text
    assert body.endswith("data: [DONE]\n\n")  # the runtime never sends it; OpenAI clients expect it
    assert body.count("[DONE]") == 1


@pytest.mark.runtime
def test_every_request_is_metered_once_with_its_key(db: Database, chat: str, client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model=chat, messages=messages)
    list(client.chat.completions.create(model=chat, messages=messages, stream=True))
    client.completions.create(model=chat, prompt="hi")
    records = wait_until(
        lambda: len(r := usage.usage_records(db=db, deployment=chat)) == 3 and r, timeout=10, what="three usage records"
    )
    key_id = next(iter(keys.active_keys(db=db).values())).id
    assert sorted(
        (r.endpoint, r.stream, r.status_code, r.prompt_tokens, r.completion_tokens, r.estimated, r.api_key_id)
        for r in records
    ) == [
        ("chat.completions", False, 200, 7, 3, False, key_id),
        ("chat.completions", True, 200, 7, 3, False, key_id),
        ("completions", False, 200, 7, 3, False, key_id),
    ]
    assert all(r.latency_ms > 0 for r in records)
    assert next(r for r in records if r.stream).ttft_ms is not None
    summary = usage.usage_summary(db=db, actor=ADMIN)
    assert [(s.key, s.deployment, s.requests, s.prompt_tokens, s.completion_tokens) for s in summary] == [
        ("app", "chat", 3, 21, 9)
    ]
    assert keys.list_keys(actor=ADMIN, db=db)[0].last_used_at is not None


@pytest.mark.runtime
def test_runtime_without_usage_is_counted_and_marked_estimated(
    db: Database, stub_model: str, controller: Controller, client: openai.OpenAI
) -> None:
    deploy(db, "quiet", stub_model, add_fake_image(db, "scripted_runtime.py", "--no-usage"))
    wait_until(lambda: status_of(db, "quiet", "Ready"), timeout=30, what="quiet to be ready")
    list(
        client.chat.completions.create(
            model="quiet",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "twelve chars"}],
        )
    )
    # metered once the gateway has tried the model's tokenizer (transformers is imported for it: seconds here)
    (record,) = wait_until(lambda: usage.usage_records(db=db, deployment="quiet"), timeout=60, what="a record")
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (3, 3, True)  # the stub's is empty


@pytest.mark.runtime
def test_replicas_share_the_load(db: Database, chat: str, client: openai.OpenAI) -> None:
    deployments.scale_deployment(actor=ADMIN, db=db, name=chat, replicas=2)
    wait_until(
        lambda: deployments.get_deployment(actor=ADMIN, db=db, name=chat).ready_replicas == 2,
        timeout=30,
        what="two ready replicas",
    )
    ports = {e.rsplit(":", 1)[1] for e in deployments.get_deployment(actor=ADMIN, db=db, name=chat).endpoints}
    seen = collections.Counter()
    for _ in range(20):
        content = wait_until(lambda: _safe_chat(client, chat), timeout=5, what="an answer")
        seen[content.rsplit(" ", 1)[1]] += 1
    assert set(seen) == ports
    assert min(seen.values()) >= 5  # idle replicas take turns


def _safe_chat(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content or ""


@pytest.mark.runtime
def test_models_health_and_metrics(
    db: Database, chat: str, gateway: GatewayServer, client: openai.OpenAI, stub_model: str
) -> None:
    deploy(db, "idle", stub_model, add_fake_image(db, "scripted_runtime.py"), replicas=0)
    assert [m.id for m in client.models.list()] == ["chat"]  # only deployments that can answer
    client.chat.completions.create(model=chat, messages=[{"role": "user", "content": "hi"}])
    health = httpx.get(gateway.url + "/healthz").json()
    assert (health["status"], health["ready_models"]) == ("ok", 1)
    metrics = httpx.get(gateway.url + "/metrics").text
    assert (
        'cove_gateway_requests_total{code="200",deployment="chat",endpoint="chat.completions",model_version="1"} 1.0'
        in metrics
    )
    assert 'cove_gateway_tokens_total{deployment="chat",kind="completion"} 3.0' in metrics
    assert (
        "cove_gateway_request_duration_seconds_count"
        '{deployment="chat",endpoint="chat.completions",model_version="1"} 1.0' in metrics
    )
    assert "cove_gateway_overhead_seconds_count 1.0" in metrics


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.runtime
def test_keys_are_required_and_revocation_takes_effect(
    db: Database, chat: str, gateway: GatewayServer, key: str
) -> None:
    url, body = gateway.url + "/v1/chat/completions", {"model": chat, "messages": [{"role": "user", "content": "x"}]}
    for headers, message in [({}, "no API key given"), ({"Authorization": "Bearer cove-wrong"}, "invalid API key")]:
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401
        assert message in response.json()["error"]["message"]
        assert response.json()["error"]["code"] == "invalid_api_key"
    fresh = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="fresh")).key  # works at once, no refresh wait
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    keys.revoke_key(actor=ADMIN, db=db, name="fresh")
    wait_until(
        lambda: httpx.post(url, json=body, headers={"Authorization": f"Bearer {fresh}"}).status_code == 401,
        timeout=5,
        what="the revoked key to stop working",
    )
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "chat"}', 400, "'messages' must be a non-empty list"),
        (b'{"model": "chat", "messages": [{"content": "x"}]}', 400, "messages[0] must be an object with a 'role'"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "'model' is required"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": 7}', 400, "temperature"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "ready models: chat"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "bad"}]}', 400, "unsupported value for top_k"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "fail"}]}', 500, "Internal Server Error"),
    ],
)
@pytest.mark.runtime
def test_bad_requests_get_openai_shaped_errors(
    chat: str, gateway: GatewayServer, key: str, payload: bytes, status: int, message: str
) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=payload,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.runtime
def test_sdk_raises_the_matching_exceptions(chat: str, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="top_k"):
        client.chat.completions.create(model=chat, messages=[{"role": "user", "content": "bad"}])


def test_deployment_without_ready_replica_is_503(
    db: Database, stub_model: str, gateway: GatewayServer, client: openai.OpenAI
) -> None:
    deploy(db, "cold", stub_model, add_fake_image(db, "scripted_runtime.py"), replicas=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="cold", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    assert "no ready replica" in caught.value.message


def _replica(script: str) -> Iterator[str]:
    """A fake runtime (``tests/fakes/<script>``) started directly, outside any controller; stopped however the test
    ends."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(FAKES / script), "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(url + "/health"), timeout=10, what=script)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def live_replica() -> Iterator[str]:
    """A scripted runtime."""
    yield from _replica("scripted_runtime.py")


@pytest.mark.runtime
def test_dead_replica_is_skipped_and_a_lone_dead_one_is_502(
    db: Database, stub_model: str, gateway: GatewayServer, client: openai.OpenAI, live_replica: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    deploy(db, "lost", stub_model, add_fake_image(db, "hanging_runtime.py"))  # no controller runs: the test plays it
    play_ready(db, "lost", [dead])
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="lost", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502
    assert "no replica of 'lost' could be reached" in caught.value.message
    # beside a live replica, a dead one costs nothing: the request is retried on the live one
    play_ready(db, "lost", [dead, live_replica])
    wait_until(lambda: len(gateway.app.table.routes["lost"].endpoints) == 2, timeout=5, what="the new routes")
    gateway.app.table.down_until.clear()
    answers_seen = {_safe_chat(client, "lost") for _ in range(6)}
    assert answers_seen == {f"hello from {live_replica.rsplit(':', 1)[1]}"}


@pytest.fixture
def idle_closing_replica() -> Iterator[str]:
    """A runtime that closes a kept-alive connection, unanswered, when the next request arrives on it."""
    yield from _replica("idle_closing_runtime.py")


@pytest.mark.runtime
def test_connection_closed_by_the_runtime_as_it_is_reused_is_retried_not_502(
    db: Database, stub_model: str, gateway: GatewayServer, client: openai.OpenAI, idle_closing_replica: str
) -> None:
    deploy(db, "keeper", stub_model, add_fake_image(db, "idle_closing_runtime.py"))  # the test plays the controller
    play_ready(db, "keeper", [idle_closing_replica])
    wait_until(lambda: "keeper" in gateway.app.table.routes, timeout=5, what="the route")
    # the 2nd and 4th chats reuse a connection the runtime then closes (the 3rd opens one: the retry's was not kept)
    said = [_safe_chat(client, "keeper") for _ in range(4)]
    assert said == ["fresh"] * 4
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'cove_gateway_upstream_errors_total{deployment="keeper",kind="retried"} 2.0' in metrics


@pytest.mark.runtime
def test_runtime_that_never_answers_is_504(tmp_path: Path, db: Database, stub_model: str, key: str) -> None:
    settings = make_settings(tmp_path / "cove", upstream_read_timeout_s=1)
    deploy(db, "slowpoke", stub_model, add_fake_image(db, "hanging_runtime.py"))
    ctl = Controller(db=db, backend=LocalBackend(settings), settings=settings)
    ctl.start()
    try:
        wait_until(lambda: status_of(db, "slowpoke", "Ready"), timeout=30, what="slowpoke to be ready")
        with (
            GatewayServer(settings, db) as gw,
            openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as c,
            pytest.raises(openai.APIStatusError) as caught,
        ):
            c.chat.completions.create(model="slowpoke", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 504
        assert "did not answer in time" in caught.value.message
    finally:
        ctl.stop(stop_workloads=True)


@pytest.mark.runtime
def test_oversized_body_is_413(chat: str, gateway: GatewayServer, key: str, settings: Settings) -> None:
    huge = b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * settings.max_body_bytes + b'"}]}'
    response = httpx.post(
        gateway.url + "/v1/chat/completions", content=huge, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 413


# ------------------------------------------------------------------------------------------------ who may call what
# Each of these plays the controller: deployments owned by different people are Ready at one scripted runtime started
# directly (it answers for any model name), so what is tested is only whose key may call which.


def ready_at(
    db: Database, replica: str, name: str, model: str, *, actor: Principal = ADMIN, group: str | None = None
) -> None:
    """Deployment ``name``, owned by ``actor`` and shared with ``group``, Ready at ``replica``."""
    deploy(db, name, model, add_fake_image(db, "scripted_runtime.py"), group=group, actor=actor)
    play_ready(db, name, [replica])


def chat_with(gateway: GatewayServer, key: str, model: str, content: str = "hi") -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": content}]},
    )


def models_of(gateway: GatewayServer, key: str) -> list[str]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
        return [m.id for m in c.models.list()]


def key_row(db: Database, name: str) -> ApiKey:
    with db.session() as session:
        return session.exec(select(ApiKey).where(ApiKey.name == name)).one()


def set_expiry(db: Database, name: str, when: datetime) -> None:
    """What the passing of time does to a key: here at once, by writing its row (keys cannot be edited)."""
    with db.session() as session:
        row = session.exec(select(ApiKey).where(ApiKey.name == name)).one()
        row.expires_at = when
        session.add(row)
        session.commit()


def scope_refusal(message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": "permission_error", "param": None, "code": "key_scope"}}


@pytest.mark.runtime
def test_key_limited_to_a_deployment_calls_only_it_and_lists_only_it(
    db: Database, stub_model: str, gateway: GatewayServer, live_replica: str, key: str
) -> None:
    for name in ("a", "b"):
        ready_at(db, live_replica, name, stub_model)
    only_a = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="only-a", deployments=["a"])).key
    answer = chat_with(gateway, only_a, "a")
    assert answer.status_code == 200
    assert answer.json()["model"] == "a"
    refused = chat_with(gateway, only_a, "b")
    assert refused.status_code == 403
    assert refused.json() == scope_refusal("API key 'only-a' is limited to the deployments a: it may not call 'b'")
    with (
        openai.OpenAI(base_url=gateway.url + "/v1", api_key=only_a, max_retries=0) as c,
        pytest.raises(openai.PermissionDeniedError, match="limited to the deployments a"),
    ):
        c.chat.completions.create(model="b", messages=[{"role": "user", "content": "hi"}])
    assert models_of(gateway, only_a) == ["a"]
    assert models_of(gateway, key) == ["a", "b"]  # the admin's unlimited key, beside it


@pytest.mark.runtime
def test_members_key_reaches_their_own_and_their_groups_deployments(
    db: Database, stub_model: str, gateway: GatewayServer, live_replica: str
) -> None:
    ana = member(db, "ana", "team")
    ready_at(db, live_replica, "mine", stub_model, actor=ana)
    ready_at(db, live_replica, "shared", stub_model, group="team")  # the admin's, shared with ana's group
    ready_at(db, live_replica, "private", stub_model)  # the admin's alone
    anas = keys.create_key(actor=ana, db=db, data=ApiKeyCreate(name="ana-app")).key
    assert [chat_with(gateway, anas, name).status_code for name in ("mine", "shared")] == [200, 200]
    refused = chat_with(gateway, anas, "private")
    assert refused.status_code == 403
    assert refused.json() == scope_refusal("API key 'ana-app' belongs to 'ana', who may not use deployment 'private'")
    assert models_of(gateway, anas) == ["mine", "shared"]
    # errors name no deployment beyond those the key may call, and do not ask it to retry what it may not call
    unknown = chat_with(gateway, anas, "nope")
    assert (unknown.status_code, unknown.json()["error"]["message"]) == (
        404,
        "the model 'nope' does not exist; ready models: mine, shared",
    )
    deploy(db, "cold", stub_model, add_fake_image(db, "scripted_runtime.py"), replicas=0)  # the admin's, not ready
    assert chat_with(gateway, anas, "cold").json() == scope_refusal(
        "API key 'ana-app' belongs to 'ana', who may not use deployment 'cold'"
    )


@pytest.mark.runtime
def test_expired_key_is_refused_as_expired(
    db: Database, stub_model: str, gateway: GatewayServer, live_replica: str
) -> None:
    ready_at(db, live_replica, "a", stub_model)
    brief = keys.create_key(
        actor=ADMIN, db=db, data=ApiKeyCreate(name="brief", expires_at=utcnow() + timedelta(hours=1))
    ).key
    assert chat_with(gateway, brief, "a").status_code == 200
    lapsed = utcnow() - timedelta(minutes=1)
    set_expiry(db, "brief", lapsed)
    refused = wait_until(
        lambda: (r := chat_with(gateway, brief, "a")).status_code != 200 and r, timeout=5, what="the lapsed key refused"
    )
    assert refused.status_code == 401
    expired = {
        "error": {
            "message": f"API key 'brief' expired at {lapsed:%Y-%m-%d %H:%M} UTC: create a new one",
            "type": "invalid_request_error",
            "param": None,
            "code": "expired_api_key",
        }
    }
    assert refused.json() == expired
    listed = httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {brief}"})
    assert (listed.status_code, listed.json()) == (401, expired)


@pytest.fixture
def default_gateway(settings: Settings, db: Database) -> Iterator[GatewayServer]:
    """The gateway re-reading keys and routes at Cove's default interval (the tests' settings use 0.2 s)."""
    default = Settings.model_fields["routes_refresh_s"].default
    with GatewayServer(settings.model_copy(update={"routes_refresh_s": default}), db) as server:
        yield server


STOPS: dict[str, Callable[[Database], None]] = {
    "revoked": lambda db: keys.revoke_key(actor=ADMIN, db=db, name="ana-app"),
    "expired": lambda db: set_expiry(db, "ana-app", utcnow() - timedelta(seconds=1)),
    "owner disabled": lambda db: users.update_user(actor=ADMIN, db=db, name="ana", disabled=True),
}


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        ("revoked", "the API key was revoked"),
        ("expired", "API key 'ana-app' expired"),
        ("owner disabled", "its owner disabled"),
    ],
)
@pytest.mark.runtime
def test_open_stream_ends_within_a_refresh_when_its_key_stops_working(
    db: Database, stub_model: str, default_gateway: GatewayServer, live_replica: str, stop: str, reason: str
) -> None:
    ana = member(db, "ana")
    ready_at(db, live_replica, "mine", stub_model, actor=ana)
    anas = keys.create_key(
        actor=ana, db=db, data=ApiKeyCreate(name="ana-app", expires_at=utcnow() + timedelta(hours=1))
    ).key
    request = {"model": "mine", "stream": True, "messages": [{"role": "user", "content": "stall"}]}
    with httpx.stream(
        "POST",
        default_gateway.url + "/v1/chat/completions",
        json=request,
        headers={"Authorization": f"Bearer {anas}"},
        timeout=10,  # the runtime never ends this stream: only the gateway can
    ) as response:
        lines = (line for line in response.iter_lines() if line)
        first = json.loads(next(lines).removeprefix("data: "))
        assert first["choices"][0]["delta"]["content"] == "hello"  # the stream is open; the runtime says no more
        STOPS[stop](db)
        stopped = time.perf_counter()
        rest = list(lines)
        ended_after = time.perf_counter() - stopped
    assert ended_after < 2, f"the stream ended {ended_after:.2f} s after the key was {stop}"
    assert not any("[DONE]" in line for line in rest)
    (event,) = (json.loads(line.removeprefix("data: ")) for line in rest)
    assert reason in event["error"]["message"]
    assert (event["error"]["type"], event["error"]["code"]) == ("invalid_request_error", 401)
    (record,) = wait_until(lambda: usage.usage_records(db=db, deployment="mine"), timeout=10, what="its usage record")
    assert (record.api_key_id, record.stream, record.status_code) == (key_row(db, "ana-app").id, True, 401)


@pytest.mark.runtime
def test_disabled_users_key_stops_working_within_a_refresh(
    db: Database, stub_model: str, default_gateway: GatewayServer, live_replica: str
) -> None:
    ana = member(db, "ana")
    ready_at(db, live_replica, "mine", stub_model, actor=ana)
    anas = keys.create_key(actor=ana, db=db, data=ApiKeyCreate(name="ana-app")).key
    assert chat_with(default_gateway, anas, "mine").status_code == 200
    users.update_user(actor=ADMIN, db=db, name="ana", disabled=True)
    disabled = time.perf_counter()
    refused = wait_until(
        lambda: (r := chat_with(default_gateway, anas, "mine")).status_code != 200 and r,
        timeout=5,
        what="the disabled user's key refused",
    )
    refused_after = time.perf_counter() - disabled
    assert refused_after < 2, f"the key still worked {refused_after:.2f} s after its owner was disabled"
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert "its owner is disabled" in refused.json()["error"]["message"]
    users.update_user(actor=ADMIN, db=db, name="ana", disabled=False)
    wait_until(
        lambda: chat_with(default_gateway, anas, "mine").status_code == 200,
        timeout=5,
        what="the key to work again once its owner is enabled",
    )
