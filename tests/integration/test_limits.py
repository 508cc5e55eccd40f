"""Rate limits with real parts: a real redis-server, real gateway processes sharing it, a real runtime process (the
scripted fake) behind them, and clients over HTTP. The limits count per one-minute window: each test starts clear of
a window's edge, so all it sends falls in one window."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from studio.controller import Controller
from studio.db import Database
from studio.gateway.counters import Lease, RedisCounters
from studio.limits import LimitScope, Rule
from studio.models import ApiKeyCreate, LimitSet
from studio.services import keys, limits, usage
from studio.settings import Settings
from studio.values import Principal
from tests.conftest import RedisServer, free_port
from tests.integration.conftest import GatewayServer, add_fake_image, cove_env, deploy, status_of, wait_until
from tests.people import ADMIN, member

HI = [{"role": "user", "content": "hi"}]


def clear_of_window_edge() -> None:
    """Wait (at most 13 s) until at least 12 s are left in the current minute: a test's requests then share one
    window, and each limit is checked against its whole value rather than twice it."""
    wait_until(lambda: time.time() % 60 < 48, timeout=15, what="a fresh stretch of the minute")


def set_limit(db: Database, scope: LimitScope, subject: str, **values: int) -> None:
    limits.set_limit(db=db, actor=ADMIN, data=LimitSet(scope=scope, subject=subject, **values))


@pytest.fixture
def chat(db: Database, stub_model: str, controller: Controller) -> str:
    """A deployment 'chat' of the scripted runtime (usage: 7 prompt and 3 completion tokens) shared with group 'lab',
    Ready."""
    deploy(db, "chat", stub_model, add_fake_image(db, "scripted_runtime.py"), group="lab")
    wait_until(lambda: status_of(db, "chat", "Ready"), timeout=30, what="chat to be ready")
    return "chat"


def new_key(db: Database, name: str) -> str:
    return keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name=name)).key


# ------------------------------------------------------------------------------------------------ the store alone


def test_replicas_sharing_redis_admit_exactly_the_limit_under_concurrent_load(redis_server: RedisServer) -> None:
    rule = Rule(LimitScope.KEY, "app", rpm=30)

    async def scenario() -> list[bool]:
        replicas = [RedisCounters(redis_server.url), RedisCounters(redis_server.url)]
        try:
            verdicts = await asyncio.gather(*(replicas[i % 2].reserve((rule,), 10, f"lease-{i}") for i in range(100)))
        finally:
            for replica in replicas:
                await replica.close()
        return [v.admitted for v, _ in verdicts]

    clear_of_window_edge()
    assert sum(asyncio.run(scenario())) == 30


def test_a_settlement_rides_on_the_replicas_next_reservation_or_goes_alone_after_its_delay(
    redis_server: RedisServer,
) -> None:
    rule = Rule(LimitScope.KEY, "app", tpm=1000, concurrency=1)

    async def scenario() -> None:
        a = RedisCounters(redis_server.url, settle_delay_s=3600)  # only a reservation (or closing) sends its own
        b = RedisCounters(redis_server.url, settle_delay_s=0.05)
        try:
            verdict, window = await a.reserve((rule,), 100, "a-1")
            assert verdict.admitted
            await a.settle(Lease("a-1", (rule,), window, 100), 10)  # used 10 of 100: waits in a
            refused, _ = await b.reserve((rule,), 100, "b-1")
            assert refused.dimension == "concurrency"  # b does not see it yet: it refuses more, never admits more
            verdict, window = await a.reserve((rule,), 100, "a-2")  # carries a-1's settlement, applied first
            assert verdict.admitted
            assert (verdict.standings[0].tokens, verdict.standings[0].active) == (10, 0)
            await a.settle(Lease("a-2", (rule,), window, 100), 20)
            await a.close()  # sends what waits
            verdict, window = await b.reserve((rule,), 100, "b-1")
            assert verdict.admitted
            assert verdict.standings[0].tokens == 30
            await b.settle(Lease("b-1", (rule,), window, 100), 0)  # b reserves nothing more: sent after 50 ms
            for _ in range(200):
                verdict, _ = await a.reserve((rule,), 0, "a-3")
                if verdict.admitted:
                    break
                await asyncio.sleep(0.01)
            assert verdict.admitted
            assert verdict.standings[0].tokens == 30
        finally:
            await a.close()
            await b.close()

    clear_of_window_edge()
    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------------ two gateways


@contextlib.contextmanager
def gateway_process(settings: Settings, log: Path) -> Iterator[str]:
    """``python -m studio.gateway`` on a port of its own, sharing the database and Redis; yields its URL."""
    port = free_port()
    env = {**cove_env(settings), "COVE_PORT": str(port), "COVE_REDIS_URL": settings.redis_url}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "studio.gateway"], env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def gateway_state(url: str) -> dict[str, object]:
    try:
        return dict(httpx.get(url + "/healthz", timeout=2).json())
    except httpx.HTTPError:
        return {}


@pytest.mark.runtime
def test_two_gateway_processes_sharing_redis_hold_each_limit_together(
    db: Database, settings: Settings, chat: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    app, bulk = new_key(db, "app"), new_key(db, "bulk")
    set_limit(db, LimitScope.KEY, "app", rpm=12)
    set_limit(db, LimitScope.DEPLOYMENT, chat, tpm=300)
    shared = settings.model_copy(update={"redis_url": redis_server.url})
    with (
        gateway_process(shared, tmp_path / "gateway-a.log") as a,
        gateway_process(shared, tmp_path / "gateway-b.log") as b,
    ):
        for url in (a, b):
            wait_until(
                lambda url=url: (s := gateway_state(url)).get("ready_models") == 1 and s["limits"]["limits"] == 2,
                timeout=30,
                what=f"the gateway at {url} to route chat with its limits",
            )

        def send(i: int, key: str, max_tokens: int) -> httpx.Response:
            body = {"model": chat, "messages": HI, "max_tokens": max_tokens}
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.post((a, b)[i % 2] + "/v1/chat/completions", json=body, headers=headers, timeout=30)

        clear_of_window_edge()
        with ThreadPoolExecutor(16) as pool:
            by_key = list(pool.map(lambda i: send(i, app, 5), range(40)))  # reserves 1 + 5 tokens each
            by_deployment = list(pool.map(lambda i: send(i, bulk, 100), range(40)))  # reserves 1 + 100 each
        for url in (a, b):  # every request was counted: none was admitted unchecked for want of an answer
            assert gateway_state(url)["limits"]["admitted_unchecked"] == 0

    statuses = Counter(r.status_code for r in by_key)
    assert statuses == {200: 12, 429: 28}  # 12 in all, not 12 per gateway
    refused = next(r for r in by_key if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    assert refused.headers["x-ratelimit-limit-requests"] == "12"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 60

    # Each answer used 10 tokens: what the deployment served stays within its 300 a minute, whatever reached which
    # gateway; the rest were refused on tokens.
    refused_on_tokens = [r for r in by_deployment if r.status_code == 429]
    assert refused_on_tokens
    assert all(r.json()["error"]["type"] == "tokens" for r in refused_on_tokens)
    assert refused_on_tokens[0].headers["x-ratelimit-limit-tokens"] == "300"
    answered = sum(r.status_code == 200 for r in by_key + by_deployment)
    served = wait_until(
        lambda: (
            len(s := [r for r in usage.usage_records(db=db, deployment=chat) if r.status_code == 200]) == answered and s
        ),
        timeout=10,
        what="the gateways' usage records",
    )
    assert sum(r.prompt_tokens + r.completion_tokens for r in served) <= 300


# ------------------------------------------------------------------------------------------------ one gateway


@pytest.fixture
def redis_gateway(settings: Settings, db: Database, redis_server: RedisServer) -> Iterator[GatewayServer]:
    with GatewayServer(settings.model_copy(update={"redis_url": redis_server.url}), db) as server:
        yield server


@pytest.mark.runtime
def test_a_stream_cut_off_midway_frees_its_slot_and_settles_its_tokens(
    db: Database, chat: str, redis_gateway: GatewayServer
) -> None:
    key = new_key(db, "app")
    set_limit(db, LimitScope.KEY, "app", concurrency=1, tpm=10_000)
    headers = {"Authorization": f"Bearer {key}"}
    url = redis_gateway.url + "/v1/chat/completions"
    hi = {"model": chat, "messages": HI, "max_tokens": 100}  # reserves 1 + 100 tokens
    clear_of_window_edge()
    wait_until(  # the first request counted (it used 10 tokens) is the first told of the limit
        lambda: "x-ratelimit-limit-tokens" in httpx.post(url, json=hi, headers=headers).headers,
        what="the limits to be read",
    )
    stall = {"model": chat, "stream": True, "max_tokens": 1000, "messages": [{"role": "user", "content": "stall"}]}
    with httpx.stream("POST", url, json=stall, headers=headers, timeout=10) as stream:
        lines = (line for line in stream.iter_lines() if line)  # kept: dropping it would hang up
        first = next(lines)
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "hello"
        busy = httpx.post(url, json=hi, headers=headers)
        assert busy.status_code == 429  # the stream holds the key's one slot
        assert busy.json()["error"]["message"].startswith("Rate limit reached for key 'app' on requests at once")
        assert busy.headers["retry-after"] == "1"
    # The client hung up after one word: the slot is free at once, and of the stream's 1002 reserved tokens only
    # those it used (its prompt's estimate, 2, and one word) stay counted.
    after = wait_until(
        lambda: (r := httpx.post(url, json=hi, headers=headers)).status_code == 200 and r,
        timeout=5,
        what="the stream's slot to be freed",
    )
    used_before = 10  # the first request's 10 tokens
    remaining = int(after.headers["x-ratelimit-remaining-tokens"])
    assert remaining == 10_000 - used_before - 3 - 101


@pytest.mark.runtime
@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_stopped_mid_test_fails_open_or_closed_and_healthz_says_so(
    db: Database, settings: Settings, chat: str, redis_server: RedisServer, mode: str
) -> None:
    key = new_key(db, "app")
    set_limit(db, LimitScope.DEPLOYMENT, chat, rpm=1000)
    tuned = settings.model_copy(update={"redis_url": redis_server.url, "limits_on_store_failure": mode})
    with GatewayServer(tuned, db) as gateway, openai.OpenAI(base_url=gateway.url + "/v1", api_key=key) as client:
        ask = client.with_options(max_retries=0).chat.completions.with_raw_response

        def limited() -> bool:
            try:
                return "x-ratelimit-limit-requests" in ask.create(model=chat, messages=HI).headers
            except openai.APIStatusError:  # failing closed, until the store answers again
                return False

        wait_until(limited, what="the limits to be read")
        redis_server.stop()
        if mode == "open":
            served = ask.create(model=chat, messages=HI)
            assert served.parse().choices[0].message.content
            assert "x-ratelimit-limit-requests" not in served.headers  # served unchecked
        else:
            with pytest.raises(openai.InternalServerError) as refused:
                ask.create(model=chat, messages=HI)
            assert refused.value.status_code == 503
            assert refused.value.response.headers["retry-after"] == "1"
        health = httpx.get(gateway.url + "/healthz").json()
        assert health["limits"]["store"] == "redis"
        assert health["limits"]["reachable"] is False
        assert health["limits"]["on_store_failure"] == mode
        assert health["limits"]["admitted_unchecked"] == (1 if mode == "open" else 0)
        redis_server.start()  # back, empty: limits are enforced again within the gateway's back-off
        wait_until(limited, timeout=10, what="limits enforced again")
        assert httpx.get(gateway.url + "/healthz").json()["limits"]["reachable"] is True


@pytest.mark.runtime
def test_limits_of_a_user_and_of_a_group_refuse_with_what_the_openai_sdk_backs_off_on(
    db: Database, chat: str, redis_gateway: GatewayServer
) -> None:
    member(db, "ana", "lab")
    ana = Principal(name="ana", groups=frozenset({"lab"}))
    key = keys.create_key(actor=ana, db=db, data=ApiKeyCreate(name="anas")).key
    with openai.OpenAI(base_url=redis_gateway.url + "/v1", api_key=key, max_retries=0) as client:
        clear_of_window_edge()
        for scope, subject in ((LimitScope.USER, "ana"), (LimitScope.GROUP, "lab")):
            set_limit(db, scope, subject, rpm=2)

            def refused(scope: LimitScope = scope, subject: str = subject) -> bool:
                try:
                    client.chat.completions.create(model=chat, messages=HI)
                    return False
                except openai.RateLimitError as exc:
                    caught = exc
                assert caught.response.headers["x-ratelimit-limit-requests"] == "2"
                return f"{scope.value} {subject!r}" in caught.message

            wait_until(refused, timeout=10, what=f"the {scope.value}'s limit to refuse")
            limits.delete_limit(db=db, actor=ADMIN, scope=scope, subject=subject)
