"""Where the gateway counts requests and tokens against rate limits: in process (one gateway, ``cove server``) or in
Redis (or Valkey), shared by every gateway replica, so a limit holds for all of them together.

Both keep the same three counters per limit (``limits.Rule.counter``): requests and tokens in the current one-minute
window, and the requests in flight (leases that end when their request does, or after ``lease_s`` when a gateway
died holding them). ``reserve`` checks every applying limit and counts the request in all of them, or in none, in one
step (one Redis round trip: a Lua script, which Redis runs atomically); ``settle`` replaces the reservation's tokens
with the ones used and frees the request's concurrency slot.

In Redis a settlement costs no round trip of its own while requests keep coming: it waits in the replica (at most
``settle_delay_s``) and rides in the next reservation's script, which applies it before it checks, so this replica
never counts against itself a request that has ended. A replica with nothing to reserve sends its waiting
settlements together when the delay is up. Other replicas may thus see a finished request's slot and tokens up to
``settle_delay_s`` late: they refuse more, never admit more, except where a request used more tokens than it
reserved (its excess lands that much later).

Why a fixed window: its counters are two integers per limit and minute, exact under any number of replicas, and its
reset time is what OpenAI's headers report. Its cost is known: across a window's edge a subject may be served up to
twice its limit within sixty seconds. A sliding log would be exact there but keeps one entry per request. The minute
is read from the store's clock (Redis ``TIME``), never from the replicas', whose clocks may differ.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from studio.errors import BackendUnavailable
from studio.gateway.resp import Connection, ReplyError
from studio.limits import WINDOW_S, Dimension, Rule, Standing, Verdict, decide

log = logging.getLogger(__name__)

PREFIX = "cove:limit:"


class StoreUnavailable(BackendUnavailable):
    """The shared counter store did not answer; the gateway then admits or refuses by its setting."""


@dataclass(frozen=True)
class Lease:
    """An admitted request's hold on its limits: what ``settle`` gives back or charges when it ends."""

    id: str
    rules: tuple[Rule, ...]
    window: int
    tokens: int


class CounterStore(Protocol):
    kind: str  # "memory" or "redis", as /healthz says it

    async def reserve(self, rules: Sequence[Rule], tokens: int, lease: str) -> tuple[Verdict, int]:
        """Admit a request of ``tokens`` against every rule, or none; (the verdict, the window it counted in).
        Raises StoreUnavailable."""
        ...

    async def settle(self, lease: Lease, used_tokens: int) -> None:
        """Charge ``used_tokens`` instead of the reserved ones (in the window reserved in) and free the slot."""
        ...

    async def reachable(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryCounters:
    """Counters in this process, for one gateway. ``clock`` (seconds since the epoch) is injected in tests."""

    kind = "memory"

    def __init__(self, *, lease_s: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.lease_s, self.clock = lease_s, clock
        self._requests: dict[tuple[str, int], int] = {}
        self._tokens: dict[tuple[str, int], int] = {}
        self._active: dict[str, dict[str, float]] = {}  # counter → lease → deadline
        self._window = 0

    def _roll(self, window: int) -> None:
        """Forget the windows before the last one (a settlement may still land in the last)."""
        if window != self._window:
            self._window = window
            for counts in (self._requests, self._tokens):
                for k in [k for k in counts if k[1] < window - 1]:
                    del counts[k]

    async def reserve(self, rules: Sequence[Rule], tokens: int, lease: str) -> tuple[Verdict, int]:
        now = self.clock()
        window = int(now // WINDOW_S)
        self._roll(window)
        standings = []
        for rule in rules:
            leases = self._active.get(rule.counter)
            if leases:
                for held in [h for h, deadline in leases.items() if deadline <= now]:
                    del leases[held]
            key = (rule.counter, window)
            standings.append(
                Standing(rule, self._requests.get(key, 0), self._tokens.get(key, 0), len(leases) if leases else 0)
            )
        refused = decide(standings, tokens)
        reset = (window + 1) * WINDOW_S - now
        if refused is not None:
            return Verdict(tuple(standings), reset, tokens, *refused), window
        for rule in rules:
            key = (rule.counter, window)
            if rule.rpm is not None:
                self._requests[key] = self._requests.get(key, 0) + 1
            if rule.tpm is not None:
                self._tokens[key] = self._tokens.get(key, 0) + tokens
            if rule.concurrency is not None:
                self._active.setdefault(rule.counter, {})[lease] = now + self.lease_s
        return Verdict(tuple(standings), reset, tokens), window

    async def settle(self, lease: Lease, used_tokens: int) -> None:
        for rule in lease.rules:
            key = (rule.counter, lease.window)
            if rule.tpm is not None and key in self._tokens:
                self._tokens[key] += used_tokens - lease.tokens
            if rule.concurrency is not None:
                self._active.get(rule.counter, {}).pop(lease.id, None)

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# Settlements as the scripts read them, from ARGV[first] to ARGV[last]: per settlement its window, tokens to add
# (negative: a refund), lease and rule count, then per rule: counter, has tpm, has concurrency. A window already
# expired is not brought back.
APPLY_SETTLEMENTS = """
local function settle(prefix, first, last)
  local i = first
  while i <= last do
    local window, delta, lease, rules = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
    i = i + 4
    for _ = 1, rules do
      local c = prefix .. ARGV[i]
      if delta ~= 0 and ARGV[i + 1] == '1' and redis.call('EXISTS', c .. ':t:' .. window) == 1 then
        redis.call('INCRBY', c .. ':t:' .. window, delta)
      end
      if ARGV[i + 2] == '1' then redis.call('ZREM', c .. ':c', lease) end
      i = i + 3
    end
  end
end
"""

# Redis runs a script atomically: no other replica's request is counted between the check and the reservation.
# ARGV: tokens, lease, lease seconds, prefix, the number m of settlement values that follow, those m values (applied
# first), then per rule: counter, rpm, tpm, concurrency (-1: not limited).
# Keys are built in the script (the window comes from the server's clock): one Redis or Valkey, not a Cluster.
RESERVE = (
    APPLY_SETTLEMENTS
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = math.floor(now / 60)
local tokens, lease, lease_s, prefix, m = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
settle(prefix, 6, 5 + m)
local base = 5 + m
local n = (#ARGV - base) / 4
local out = {0, '', window, tostring((window + 1) * 60 - now)}
for i = 1, n do
  local b = base + (i - 1) * 4
  local c = prefix .. ARGV[b + 1]
  local rpm, tpm, conc = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local r = tonumber(redis.call('GET', c .. ':r:' .. window) or '0')
  local k = tonumber(redis.call('GET', c .. ':t:' .. window) or '0')
  local a = 0
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', c .. ':c', '-inf', tostring(now))
    a = redis.call('ZCARD', c .. ':c')
  end
  table.insert(out, r); table.insert(out, k); table.insert(out, a)
  if out[1] == 0 then
    if rpm >= 0 and r + 1 > rpm then out[1], out[2] = i, 'requests'
    elseif tpm >= 0 and k + tokens > tpm then out[1], out[2] = i, 'tokens'
    elseif conc >= 0 and a + 1 > conc then out[1], out[2] = i, 'concurrency' end
  end
end
if out[1] == 0 then
  for i = 1, n do
    local b = base + (i - 1) * 4
    local c = prefix .. ARGV[b + 1]
    if tonumber(ARGV[b + 2]) >= 0 and redis.call('INCR', c .. ':r:' .. window) == 1 then
      redis.call('EXPIRE', c .. ':r:' .. window, 150)  -- a window's counters outlive it by a settlement's time
    end
    if tonumber(ARGV[b + 3]) >= 0 and redis.call('INCRBY', c .. ':t:' .. window, tokens) == tokens then
      redis.call('EXPIRE', c .. ':t:' .. window, 150)
    end
    if tonumber(ARGV[b + 4]) >= 0 then
      redis.call('ZADD', c .. ':c', tostring(now + lease_s), lease); redis.call('EXPIRE', c .. ':c', lease_s + 60)
    end
  end
end
return out
"""
)

# ARGV: prefix, then settlements (as above): those a replica sends when no reservation came to carry them.
SETTLE = (
    APPLY_SETTLEMENTS
    + """
settle(ARGV[1], 2, #ARGV)
return 0
"""
)
# How long a settlement waits for a reservation to carry it, and how many may wait: a bound on how late other
# replicas see it, and on the size of one script call.
SETTLE_DELAY_S = 0.05
MAX_WAITING_SETTLEMENTS = 256


def _arg(value: int | None) -> int:
    return -1 if value is None else value


def settlement(lease: Lease, used_tokens: int) -> list[str | int]:
    """A settlement's values as the scripts read them (APPLY_SETTLEMENTS)."""
    values: list[str | int] = [lease.window, used_tokens - lease.tokens, lease.id, len(lease.rules)]
    for rule in lease.rules:
        values += [rule.counter, int(rule.tpm is not None), int(rule.concurrency is not None)]
    return values


class RedisCounters:
    """Counters in Redis, shared by the gateway's replicas. A call that fails or takes longer than ``timeout_s``
    raises StoreUnavailable, and for ``backoff_s`` after that every call does at once (no request waits for a
    store known to be down). Settlements wait up to ``settle_delay_s`` for a reservation to carry them (see the
    module's docstring); those a failed call carried are dropped, as a failed settlement is (the window expires, a
    slot is freed when its lease ends)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 1.0,
        lease_s: float = 3600.0,
        backoff_s: float = 1.0,
        settle_delay_s: float = SETTLE_DELAY_S,
    ) -> None:
        self.lease_s, self.backoff_s, self.timeout_s = lease_s, backoff_s, timeout_s
        self.redis = Connection(url, connect_timeout_s=timeout_s)
        # where, as logs and errors say it: never the URL itself, which may hold a password
        self.url = f"{'rediss' if self.redis.tls else 'redis'}://{self.redis.host}:{self.redis.port}/{self.redis.db}"
        self._down_until = 0.0
        self.settle_delay_s = settle_delay_s
        self._waiting: list[str | int] = []  # settlements not yet sent, as the scripts read them
        self._waiting_count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def _call(self, what: str, run: Callable[[], Awaitable[object]]) -> object:
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"the rate-limit store at {self.url} did not answer a moment ago")
        try:
            async with asyncio.timeout(self.timeout_s):  # a command cancelled here drops its connection
                return await run()
        except (TimeoutError, ReplyError, OSError) as exc:
            self._down_until = time.monotonic() + self.backoff_s
            raise StoreUnavailable(
                f"the rate-limit store at {self.url} failed to {what}: {exc}",
                hint="check COVE_REDIS_URL and that the server runs",
            ) from exc

    def _take_waiting(self) -> list[str | int]:
        waiting, self._waiting, self._waiting_count = self._waiting, [], 0
        return waiting

    async def reserve(self, rules: Sequence[Rule], tokens: int, lease: str) -> tuple[Verdict, int]:
        carried = self._take_waiting()
        args: list[str | int | float] = [tokens, lease, int(self.lease_s), PREFIX, len(carried), *carried]
        for rule in rules:
            args += [rule.counter, _arg(rule.rpm), _arg(rule.tpm), _arg(rule.concurrency)]
        out = await self._call("reserve", lambda: self.redis.evalsha(RESERVE, *args))
        assert isinstance(out, list)
        refused, window, reset = int(out[0]), int(out[2]), float(out[3])
        standings = tuple(
            Standing(rule, int(out[4 + 3 * i]), int(out[5 + 3 * i]), int(out[6 + 3 * i]))
            for i, rule in enumerate(rules)
        )
        if refused == 0:
            return Verdict(standings, reset, tokens), window
        dimension = Dimension(out[1].decode() if isinstance(out[1], bytes) else out[1])
        return Verdict(standings, reset, tokens, rules[refused - 1], dimension), window

    async def settle(self, lease: Lease, used_tokens: int) -> None:
        """Queue the settlement for the next reservation to carry; sent alone once ``settle_delay_s`` is up (or
        at once when many wait). Never raises: a failed send is logged and dropped."""
        self._waiting += settlement(lease, used_tokens)
        self._waiting_count += 1
        if self._waiting_count >= MAX_WAITING_SETTLEMENTS or self.settle_delay_s <= 0:
            self._send_waiting()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.settle_delay_s, self._send_waiting)

    def _send_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiting:
            count = self._waiting_count
            task = asyncio.ensure_future(self._send(self._take_waiting(), count))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, settlements: list[str | int], count: int) -> None:
        try:
            await self._call("settle", lambda: self.redis.evalsha(SETTLE, PREFIX, *settlements))
        except StoreUnavailable as exc:  # the next reservation says the store is down; this one is dropped
            log.warning("%s; %d settlements dropped", exc, count)

    async def reachable(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await self.redis.call("PING") == b"PONG")
        except (TimeoutError, ReplyError, OSError):
            return False

    async def close(self) -> None:
        """Send the settlements still waiting, then close the connections."""
        self._send_waiting()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=self.timeout_s * 2)
        await self.redis.close()
