"""Each person's playground key: its name, when it is made and re-made (a clock that jumps), and the one retry after a
refusal, against a gateway client that refuses revoked keys (no network)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from playground.chat import KeyRejected, ReplyStats, Sampling
from playground.keys import KEY_LIFETIME, RENEW_BEFORE, IssuedKey, Keyring, PersonalClient, key_name
from studio.names import MAX_NAME, check_name
from studio.values import Principal

ANA, BO = Principal(name="ana"), Principal(name="bo")
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class KeyFactory:
    """Makes keys ``secret-1``, ``secret-2``, … for whoever asks, expiring a day after ``clock``'s now."""

    clock: Clock
    made: list[tuple[str, str]] = field(default_factory=list)  # (person, secret)

    def __call__(self, who: Principal) -> IssuedKey:
        secret = f"secret-{len(self.made) + 1}"
        self.made.append((who.name, secret))
        return IssuedKey(
            secret=secret, name=key_name(who.name, str(len(self.made))), expires_at=self.clock() + KEY_LIFETIME
        )


@dataclass
class RevokingGateway:
    """A gateway client whose keys work until put in ``revoked``; ``midway`` refuses a key after the first word (as a
    stream cut when its key is revoked). Records which key each call sent."""

    revoked: set[str] = field(default_factory=set)
    midway: set[str] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)
    api_key: str = ""

    def with_key(self, api_key: str) -> RevokingGateway:
        twin = RevokingGateway(self.revoked, self.midway, self.sent, api_key)
        return twin

    def _check(self) -> None:
        self.sent.append(self.api_key)
        if self.api_key in self.revoked:
            raise KeyRejected("invalid API key: it is unknown or was revoked")

    def models(self) -> list[str]:
        self._check()
        return ["alpha"]

    def resolve_model(self, model: str | None) -> str:
        return model or self.models()[0]

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling
    ) -> Iterator[str | ReplyStats]:
        self._check()
        yield "hello"
        if self.api_key in self.midway:
            raise KeyRejected("the API key was revoked")
        yield " there"
        yield ReplyStats(started=0.0)


def keyring(gateway: RevokingGateway | None = None) -> tuple[Keyring, KeyFactory, Clock]:
    clock = Clock()
    factory = KeyFactory(clock)
    base: Any = gateway or RevokingGateway()
    return Keyring(base=base, make_key=factory, clock=clock), factory, clock


# ------------------------------------------------------------------------------------------------ names


def test_a_key_is_named_for_its_person() -> None:
    assert key_name("ana", "1a2b3c4d") == "playground-ana-1a2b3c4d"


@pytest.mark.parametrize("user", ["a" * MAX_NAME, "a" * 32 + "-b" * 10, "x-" * 20 + "y"])
def test_a_long_user_name_is_shortened_into_a_valid_key_name(user: str) -> None:
    name = key_name(user, "1a2b3c4d")
    assert check_name(name) == name
    assert len(name) <= MAX_NAME
    assert name.startswith("playground-" + user[:8])
    assert name.endswith("-1a2b3c4d")
    assert not name.removesuffix("-1a2b3c4d").endswith("-")  # a shortened name does not end in its '-'


# ------------------------------------------------------------------------------------------------ keyring


def test_each_person_gets_a_key_of_their_own_once() -> None:
    ring, factory, _ = keyring()
    ana = ring.client(ANA)
    assert ring.client(ANA) is ana
    assert ring.client(BO) is not ana
    assert factory.made == [("ana", "secret-1"), ("bo", "secret-2")]
    assert (ana.api_key, ring.client(BO).api_key) == ("secret-1", "secret-2")
    key = ring.key_of(ANA)
    assert key is not None
    assert key.expires_at == START + KEY_LIFETIME


def test_a_key_about_to_expire_is_replaced_before_a_chat() -> None:
    ring, factory, clock = keyring()
    first = ring.client(ANA)
    clock.now = START + KEY_LIFETIME - RENEW_BEFORE - timedelta(seconds=1)
    assert ring.client(ANA) is first
    clock.now += timedelta(seconds=1)
    assert ring.client(ANA).api_key == "secret-2"
    assert [secret for _, secret in factory.made] == ["secret-1", "secret-2"]


def test_two_refusals_of_the_same_key_make_one_new_key() -> None:
    ring, factory, _ = keyring()
    refused = ring.client(ANA)
    renewed = ring.renew(ANA, refused)
    assert ring.renew(ANA, refused) is renewed  # the second chat refused with the old key gets the new one
    assert ring.client(ANA) is renewed
    assert len(factory.made) == 2


# ------------------------------------------------------------------------------------------------ retry


def test_a_revoked_key_is_replaced_and_the_call_retried_once() -> None:
    gateway = RevokingGateway()
    ring, factory, _ = keyring(gateway)
    ana = PersonalClient(ring, ANA)
    assert ana.models() == ["alpha"]
    gateway.revoked.add("secret-1")
    assert ana.models() == ["alpha"]
    assert gateway.sent == ["secret-1", "secret-1", "secret-2"]
    gateway.revoked.add("secret-2")
    assert "".join(x for x in ana.stream_chat("alpha", [], Sampling()) if isinstance(x, str)) == "hello there"
    assert gateway.sent[-2:] == ["secret-2", "secret-3"]
    assert [who for who, _ in factory.made] == ["ana", "ana", "ana"]


def test_a_key_refused_again_after_renewal_is_the_persons_to_read() -> None:
    gateway = RevokingGateway(revoked={"secret-1", "secret-2", "secret-3"})  # a gateway that refuses every key
    ring, factory, _ = keyring(gateway)
    ana = PersonalClient(ring, ANA)
    with pytest.raises(KeyRejected):
        ana.models()
    with pytest.raises(KeyRejected):
        list(ana.stream_chat("alpha", [], Sampling()))
    assert gateway.sent == ["secret-1", "secret-2", "secret-2", "secret-3"]  # one new key per call, no more
    assert len(factory.made) == 3


def test_a_reply_cut_after_it_began_is_not_sent_again() -> None:
    gateway = RevokingGateway(midway={"secret-1"})
    ring, factory, _ = keyring(gateway)
    reply = PersonalClient(ring, ANA).stream_chat("alpha", [], Sampling())
    assert next(reply) == "hello"
    with pytest.raises(KeyRejected):
        next(reply)
    assert len(factory.made) == 1


def test_closing_a_reply_early_closes_the_stream_under_it() -> None:
    closed = []

    class Tracked(RevokingGateway):
        def with_key(self, api_key: str) -> RevokingGateway:
            return Tracked(self.revoked, self.midway, self.sent, api_key)

        def stream_chat(
            self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling
        ) -> Iterator[str | ReplyStats]:
            try:
                yield from super().stream_chat(model, messages, sampling)
            finally:
                closed.append(self.api_key)

    ring, _, _ = keyring(Tracked())
    reply = PersonalClient(ring, ANA).stream_chat("alpha", [], Sampling())
    assert next(reply) == "hello"
    reply.close()
    assert closed == ["secret-1"]
