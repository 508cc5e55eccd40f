"""Each person chats with a key of their own: the playground never sends a shared one.

The first time someone opens the playground (or calls its API), it makes them a key through the studio's key service,
acting as them: named ``playground-<user>-<random>`` so it is recognisable in their key list, reaching exactly the
deployments they may use, and expiring after :data:`KEY_LIFETIME`, so the keys of a playground that stopped lapse on
their own. The secret is kept in this process's memory only. A key is made again when it is about to expire, and
when the gateway refuses it (revoked by an admin, say): :class:`PersonalClient` makes one new key and retries once.

:func:`key_name` is pure; :class:`Keyring` takes the function that makes keys (:func:`studio_keys` in the playground,
a fake in tests) and a clock.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from playground.chat import KeyRejected, PlaygroundClient, PlaygroundError, ReplyStats, Sampling
from studio.db import Database, utcnow
from studio.errors import CoveError
from studio.models import ApiKeyCreate
from studio.names import MAX_NAME
from studio.services import keys
from studio.values import Principal

T = TypeVar("T")
KEY_PREFIX = "playground-"
KEY_LIFETIME = timedelta(days=1)
# A key this close to its expiry is replaced before a chat starts: the gateway ends a stream whose key expires.
RENEW_BEFORE = timedelta(minutes=10)
_SUFFIX_BYTES = 4  # 8 hex digits


def key_name(user: str, suffix: str) -> str:
    """``playground-<user>-<suffix>``, the user's part shortened so that the whole is a valid name (at most
    ``MAX_NAME`` characters, not ending in '-' before the suffix)."""
    room = MAX_NAME - len(KEY_PREFIX) - len(suffix) - 1
    return f"{KEY_PREFIX}{user[:room].rstrip('-')}-{suffix}"


@dataclass(frozen=True)
class IssuedKey:
    """A key made for the playground: its secret (never shown), its name and when it stops working."""

    secret: str
    name: str
    expires_at: datetime


KeyMaker = Callable[[Principal], IssuedKey]


def studio_keys(
    db: Database, *, lifetime: timedelta = KEY_LIFETIME, clock: Callable[[], datetime] = utcnow
) -> KeyMaker:
    """Makes keys through ``studio.services.keys.create_key``, acting as the person the key is for."""

    def make(who: Principal) -> IssuedKey:
        name = key_name(who.name, secrets.token_hex(_SUFFIX_BYTES))
        try:
            created = keys.create_key(db=db, actor=who, data=ApiKeyCreate(name=name, expires_at=clock() + lifetime))
        except CoveError as exc:  # the database is down, say: the person reads why, the page keeps working
            raise PlaygroundError(f"Cove could not make you a key for the playground: {exc}") from exc
        assert created.expires_at is not None  # asked for above
        return IssuedKey(secret=created.key, name=created.name, expires_at=created.expires_at)

    return make


@dataclass(frozen=True)
class _Held:
    key: IssuedKey
    client: PlaygroundClient


class Keyring:
    """Per person, the key the playground made them and a client that sends it (sharing ``base``'s connections).

    Thread-safe: Gradio runs handlers on threads. Keys are made under one lock, so two chats that start at once (or
    that are both refused) make one key, not two.
    """

    def __init__(self, *, base: PlaygroundClient, make_key: KeyMaker, clock: Callable[[], datetime] = utcnow) -> None:
        self.base, self.make_key, self.clock = base, make_key, clock
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def client(self, who: Principal) -> PlaygroundClient:
        """``who``'s client: the one held, or one with a new key when none is held or it is about to expire."""
        with self._lock:
            held = self._held.get(who.name)
            if held is None or held.key.expires_at - RENEW_BEFORE <= self.clock():
                held = self._issue(who)
            return held.client

    def renew(self, who: Principal, refused: PlaygroundClient) -> PlaygroundClient:
        """A client with a new key for ``who``, whose ``refused`` client the gateway turned away; when another chat
        already replaced that key, the replacement."""
        with self._lock:
            held = self._held.get(who.name)
            if held is not None and held.client is not refused:
                return held.client
            return self._issue(who).client

    def key_of(self, who: Principal) -> IssuedKey | None:
        """The key held for ``who``, if any (for the page and for tests)."""
        held = self._held.get(who.name)
        return None if held is None else held.key

    def _issue(self, who: Principal) -> _Held:
        key = self.make_key(who)
        held = _Held(key, self.base.with_key(key.secret))
        self._held[who.name] = held
        return held


@dataclass(frozen=True)
class PersonalClient:
    """The gateway as one person sees it (a :class:`playground.chat.ChatClient`): their key from ``keyring``; a key
    the gateway refuses (401) is replaced once and the call retried, then a second refusal is the person's to read.
    A reply is retried only before any of it arrived (a 401 comes before the first token)."""

    keyring: Keyring
    who: Principal

    def models(self) -> list[str]:
        return self._retrying(lambda client: client.models())

    def resolve_model(self, model: str | None) -> str:
        return self._retrying(lambda client: client.resolve_model(model))

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling
    ) -> Generator[str | ReplyStats, None, None]:
        client = self.keyring.client(self.who)
        stream = client.stream_chat(model, messages, sampling)
        try:
            try:
                first = next(stream, None)
            except KeyRejected:
                stream = self.keyring.renew(self.who, client).stream_chat(model, messages, sampling)
                first = next(stream, None)
            if first is not None:
                yield first
                yield from stream
        finally:
            stream.close()  # closing this generator early closes the HTTP stream

    def _retrying(self, call: Callable[[PlaygroundClient], T]) -> T:
        client = self.keyring.client(self.who)
        try:
            return call(client)
        except KeyRejected:
            return call(self.keyring.renew(self.who, client))
