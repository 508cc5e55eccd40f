"""The gateway's side of rate limits: the limits read from the database at each refresh, a request admitted against
those that apply (or refused with OpenAI's 429), and its reservation settled when its answer ends.

A request that no limit applies to costs one dictionary lookup per scope and no store call. When the counter store
does not answer, the gateway admits (``on_store_failure="open"``, the default) or refuses with 503 (``"closed"``);
either way it logs when the store goes away and comes back, and ``/healthz`` says so.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from typing import Any, Literal

from studio.gateway.counters import CounterStore, Lease, MemoryCounters, RedisCounters, StoreUnavailable
from studio.gateway.protocol import error_body, estimate_prompt_tokens
from studio.limits import Rule, RuleBook, headers, refusal, reservation
from studio.services.keys import KeyIdentity
from studio.settings import Settings

log = logging.getLogger(__name__)


class Refused(Exception):
    """A request the limits (or an unreachable store, failing closed) turn away: status, body and headers."""

    def __init__(self, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, extra


def store_of(settings: Settings) -> CounterStore:
    if settings.redis_url:
        return RedisCounters(settings.redis_dsn, timeout_s=settings.redis_timeout_s, lease_s=settings.limits_lease_s)
    return MemoryCounters(lease_s=settings.limits_lease_s)


class Limiter:
    def __init__(
        self,
        store: CounterStore,
        *,
        on_store_failure: Literal["open", "closed"] = "open",
        max_tokens_cap: int = 4096,
    ) -> None:
        self.store, self.on_store_failure, self.max_tokens_cap = store, on_store_failure, max_tokens_cap
        self.rules = RuleBook()
        self.settling: set[asyncio.Task[None]] = set()
        self.store_down = False  # the last call failed
        self.admitted_unchecked = 0  # requests admitted without counting while the store was down (failing open)
        self._ids = itertools.count()
        self._me = secrets.token_hex(6)  # leases of different replicas never collide

    def replace(self, rules: list[Rule]) -> None:
        self.rules = RuleBook(rules)

    def applying(self, identity: KeyIdentity | None, deployment: str) -> tuple[Rule, ...]:
        if not self.rules:
            return ()
        if identity is None:
            return self.rules.applying(deployment=deployment)
        return self.rules.applying(
            deployment=deployment, key=identity.name, user=identity.owner, groups=identity.groups
        )

    async def admit(
        self,
        rules: tuple[Rule, ...],
        body: dict[str, Any],
        *,
        prompt_tokens: int | None = None,
        max_tokens_cap: int | None = None,
    ) -> tuple[Lease | None, list[tuple[bytes, bytes]]]:
        """Count a request against ``rules`` (not empty): its lease and the ``x-ratelimit-*`` headers; raises
        Refused. The lease is None when the store was down and the gateway failed open. A request naming no
        max_tokens reserves ``max_tokens_cap`` (its deployment's cap; the limiter's default when None).
        ``prompt_tokens``: the prompt's estimate where the caller has it (else made here)."""
        cap = max_tokens_cap or self.max_tokens_cap
        prompt = estimate_prompt_tokens(body) if prompt_tokens is None else prompt_tokens
        tokens = reservation(body, prompt_tokens=prompt, max_tokens_cap=cap)
        lease_id = f"{self._me}-{next(self._ids)}"
        try:
            verdict, window = await self.store.reserve(rules, tokens, lease_id)
        except StoreUnavailable as exc:
            self._went_down(exc)
            if self.on_store_failure == "open":
                self.admitted_unchecked += 1
                return None, []
            raise Refused(
                503,
                error_body(
                    "rate limits cannot be checked now (their store does not answer); retry shortly",
                    type="service_unavailable",
                    code="rate_limit_store_unavailable",
                ),
                [(b"retry-after", b"1")],
            ) from exc
        if self.store_down:
            self.store_down = False
            log.warning("the rate-limit store (%s) answers again: limits are enforced", self.store.kind)
        if not verdict.admitted:
            raise Refused(429, refusal(verdict), headers(verdict))
        return Lease(lease_id, rules, window, tokens), headers(verdict)

    def _went_down(self, exc: StoreUnavailable) -> None:
        if not self.store_down:
            self.store_down = True
            then = "admitting requests unchecked" if self.on_store_failure == "open" else "refusing limited requests"
            log.error("%s; %s until it answers (COVE_LIMITS_ON_STORE_FAILURE=%s)", exc, then, self.on_store_failure)

    def settle(self, lease: Lease, used_tokens: int) -> None:
        """Settle off the request's path (a task the gateway waits for at shutdown)."""
        task = asyncio.ensure_future(self._settle(lease, used_tokens))
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)

    async def _settle(self, lease: Lease, used_tokens: int) -> None:
        try:
            await self.store.settle(lease, used_tokens)
        except StoreUnavailable as exc:  # the window expires anyway; a slot is freed when its lease ends
            self._went_down(exc)

    async def health(self) -> dict[str, object]:
        reachable = await self.store.reachable()
        return {
            "store": self.store.kind,
            "reachable": reachable,
            "on_store_failure": self.on_store_failure,
            "limits": len(self.rules),
            "admitted_unchecked": self.admitted_unchecked,
        }
