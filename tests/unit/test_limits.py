"""Rate limits as pure functions (which apply, reservations, OpenAI's 429 and headers) and the in-process counter
store, with an injected clock."""

from __future__ import annotations

import asyncio
from typing import Literal

import orjson
import pytest

from studio.gateway.counters import Lease, MemoryCounters, StoreUnavailable
from studio.gateway.limiting import Limiter, Refused
from studio.limits import (
    Dimension,
    LimitScope,
    Rule,
    RuleBook,
    Standing,
    Verdict,
    duration,
    headers,
    refusal,
    reservation,
)

KEY = Rule(LimitScope.KEY, "app", rpm=2)
USER = Rule(LimitScope.USER, "ana", tpm=100)
GROUP = Rule(LimitScope.GROUP, "lab", concurrency=1)
DEPLOYMENT = Rule(LimitScope.DEPLOYMENT, "chat", rpm=10, tpm=1000)
BOOK = RuleBook([KEY, USER, GROUP, DEPLOYMENT, Rule(LimitScope.USER, "bob")])


def test_a_request_counts_against_its_key_owner_groups_and_deployment() -> None:
    assert BOOK.applying(deployment="chat", key="app", user="ana", groups={"lab", "other"}) == (
        KEY,
        USER,
        GROUP,
        DEPLOYMENT,
    )
    assert BOOK.applying(deployment="chat") == (DEPLOYMENT,)  # no key: gateway auth is off
    assert BOOK.applying(deployment="else", key="other", user="bob") == ()  # bob's rule limits nothing
    assert len(BOOK) == 4
    assert not RuleBook()
    assert RuleBook().applying(deployment="chat", key="app") == ()


@pytest.mark.parametrize(
    ("body", "reserved"),
    [
        ({"prompt": "x"}, 10 + 4096),  # no max_tokens: the cap
        ({"prompt": "x", "max_tokens": 50}, 60),
        ({"prompt": "x", "max_completion_tokens": 50, "max_tokens": 70}, 60),  # the newer name wins
        ({"prompt": "x", "max_tokens": 100_000}, 10 + 4096),  # capped
        ({"prompt": "x", "max_tokens": 50, "n": 3}, 160),
        ({"prompt": "x", "max_tokens": True}, 10 + 4096),  # not a number
    ],
)
def test_a_request_reserves_its_prompt_and_answers(body: dict[str, object], reserved: int) -> None:
    assert reservation(body, prompt_tokens=10) == reserved


@pytest.mark.parametrize(
    ("seconds", "written"), [(0.12, "120ms"), (1, "1s"), (7.66, "7.66s"), (360, "6m0s"), (90.5, "1m30.5s")]
)
def test_durations_are_written_as_openai_writes_them(seconds: float, written: str) -> None:
    assert duration(seconds) == written


def test_a_refusal_is_openais_429_with_retry_after() -> None:
    standings = (Standing(KEY, 2, 0, 0), Standing(DEPLOYMENT, 5, 300, 0))
    verdict = Verdict(standings, 12.4, 50, KEY, Dimension.REQUESTS)
    error = orjson.loads(refusal(verdict))["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert "key 'app'" in error["message"]
    assert "Limit 2, Used 2" in error["message"]
    assert "13s" in error["message"]
    assert dict(headers(verdict)) == {
        b"x-ratelimit-limit-requests": b"2",
        b"x-ratelimit-remaining-requests": b"0",
        b"x-ratelimit-reset-requests": b"12.4s",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"700",
        b"x-ratelimit-reset-tokens": b"12.4s",
        b"retry-after": b"13",
    }


def test_an_admission_reports_what_is_left_after_it() -> None:
    verdict = Verdict((Standing(DEPLOYMENT, 5, 300, 0),), 0.5, 50)
    assert dict(headers(verdict)) == {
        b"x-ratelimit-limit-requests": b"10",
        b"x-ratelimit-remaining-requests": b"4",
        b"x-ratelimit-reset-requests": b"500ms",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"650",
        b"x-ratelimit-reset-tokens": b"500ms",
    }


def test_a_request_larger_than_a_token_limit_is_told_so() -> None:
    verdict = Verdict((Standing(USER, 0, 0, 0),), 30, 500, USER, Dimension.TOKENS)
    error = orjson.loads(refusal(verdict))["error"]
    assert error["type"] == "tokens"
    assert "alone exceeds" in error["message"]


# ------------------------------------------------------------------------------------------------ in-process store


class Clock:
    def __init__(self, now: float = 600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_memory_counters_hold_each_limit_in_its_window() -> None:
    async def scenario() -> None:
        clock = Clock()
        store = MemoryCounters(clock=clock)
        rules = (KEY, DEPLOYMENT)
        admitted = [(await store.reserve(rules, 10, f"l{i}"))[0].admitted for i in range(3)]
        assert admitted == [True, True, False]
        verdict, _ = await store.reserve(rules, 10, "l3")
        assert verdict.refused_by == KEY
        assert verdict.reset_s == 60
        clock.now += 60  # the next minute
        assert (await store.reserve(rules, 10, "l4"))[0].admitted

    asyncio.run(scenario())


def test_memory_counters_refuse_all_or_nothing_and_settle_tokens() -> None:
    async def scenario() -> None:
        store = MemoryCounters(clock=Clock())
        verdict, window = await store.reserve((DEPLOYMENT, USER), 80, "a")
        assert verdict.admitted
        verdict, _ = await store.reserve((DEPLOYMENT, USER), 80, "b")
        assert verdict.refused_by == USER
        assert verdict.dimension is Dimension.TOKENS
        verdict, _ = await store.reserve((DEPLOYMENT,), 0, "c")  # the refused request was not counted
        assert verdict.standings[0].requests == 1
        assert verdict.standings[0].tokens == 80
        await store.settle(Lease("a", (DEPLOYMENT, USER), window, 80), 15)  # it used 15 of the 80 reserved
        assert (await store.reserve((DEPLOYMENT, USER), 80, "d"))[0].admitted

    asyncio.run(scenario())


def test_memory_counters_free_a_concurrency_slot_when_the_request_ends_or_its_lease_does() -> None:
    async def scenario() -> None:
        clock = Clock()
        store = MemoryCounters(clock=clock, lease_s=30)
        verdict, window = await store.reserve((GROUP,), 0, "a")
        assert verdict.admitted
        verdict, _ = await store.reserve((GROUP,), 0, "b")
        assert verdict.dimension is Dimension.CONCURRENCY
        assert dict(headers(verdict))[b"retry-after"] == b"1"
        await store.settle(Lease("a", (GROUP,), window, 0), 0)
        assert (await store.reserve((GROUP,), 0, "c"))[0].admitted
        clock.now += 31  # the gateway holding "c" died: its lease ends
        assert (await store.reserve((GROUP,), 0, "d"))[0].admitted

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------------ the gateway's side


class DownStore(MemoryCounters):
    """A counter store that never answers (Redis stopped)."""

    kind = "redis"

    async def reserve(self, rules: object, tokens: int, lease: str) -> tuple[Verdict, int]:
        raise StoreUnavailable("the rate-limit store at redis://nowhere failed to reserve: refused")

    async def reachable(self) -> bool:
        return False


BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def test_the_limiter_admits_refuses_and_settles() -> None:
    async def scenario() -> None:
        limiter = Limiter(MemoryCounters(clock=Clock()))
        limiter.replace([Rule(LimitScope.DEPLOYMENT, "chat", rpm=5, tpm=13)])
        rules = limiter.applying(None, "chat")
        lease, extra = await limiter.admit(rules, BODY)  # reserves 1 (the prompt's estimate) + 10
        assert lease is not None
        assert dict(extra)[b"x-ratelimit-remaining-tokens"] == b"2"
        with pytest.raises(Refused) as refused:
            await limiter.admit(rules, BODY)
        assert refused.value.status == 429
        limiter.settle(lease, 2)  # it used 2 tokens
        await asyncio.gather(*limiter.settling)
        lease, _ = await limiter.admit(rules, BODY)
        assert lease is not None
        assert limiter.applying(None, "other") == ()

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_an_unreachable_store_admits_or_refuses_by_setting(mode: Literal["open", "closed"]) -> None:
    async def scenario() -> None:
        limiter = Limiter(DownStore(), on_store_failure=mode)
        limiter.replace([Rule(LimitScope.DEPLOYMENT, "chat", rpm=1)])
        if mode == "open":
            assert await limiter.admit(limiter.applying(None, "chat"), BODY) == (None, [])
            assert await limiter.admit(limiter.applying(None, "chat"), BODY) == (None, [])  # beyond the limit
        else:
            with pytest.raises(Refused) as refused:
                await limiter.admit(limiter.applying(None, "chat"), BODY)
            assert refused.value.status == 503
            assert dict(refused.value.headers)[b"retry-after"] == b"1"
        health = await limiter.health()
        assert health == {
            "store": "redis",
            "reachable": False,
            "on_store_failure": mode,
            "limits": 1,
            "admitted_unchecked": 2 if mode == "open" else 0,
        }

    asyncio.run(scenario())


def test_caps_name_the_parameter_asked_beyond_them() -> None:
    from studio.limits import Caps

    caps = Caps(max_tokens=100, n=2)
    assert caps.excess({"max_tokens": 100, "n": 2}) is None
    assert caps.excess({}) is None
    message = "'max_tokens' is 101, more than this deployment's cap of 100"
    assert caps.excess({"max_tokens": 101}) == (message, "max_tokens")
    assert caps.excess({"max_completion_tokens": 500})[1] == "max_completion_tokens"  # type: ignore[index]
    assert caps.excess({"max_output_tokens": 500})[1] == "max_output_tokens"  # type: ignore[index]
    assert caps.excess({"n": 3}) == ("'n' is 3, more than this deployment's cap of 2", "n")


def test_redis_commands_are_packed_as_resp_arrays_of_bulk_strings() -> None:
    from studio.gateway.resp import pack

    assert pack(("SET", "k", b"v\r\n", 12)) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n12\r\n"
