"""Rate limits, as pure functions: which limits apply to a request, how many tokens it reserves, and how a refusal
reads (OpenAI's 429 body and ``x-ratelimit-*`` headers, which the ``openai`` SDK backs off on).

A limit is a scope (``key``, ``user``, ``group``, ``deployment``), a subject (the key's, user's, group's or deployment's
name) and any of: requests per minute, tokens per minute, requests at once. A request is admitted against every limit
that applies to it: its key's, the key's owner's, each of the owner's groups', and the deployment's it names.

Counting is a fixed one-minute window shared by every gateway replica (``studio.gateway.counters``): a request
reserves one request and its token estimate in the current window of every applying limit, or none of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

WINDOW_S = 60  # requests and tokens are counted per minute
DEFAULT_MAX_TOKENS = 4096  # what a request that names no max_tokens reserves for its answer


class LimitScope(StrEnum):
    KEY = "key"
    USER = "user"
    GROUP = "group"
    DEPLOYMENT = "deployment"


class Dimension(StrEnum):
    REQUESTS = "requests"  # per minute
    TOKENS = "tokens"  # per minute
    CONCURRENCY = "concurrency"  # at once


@dataclass(frozen=True)
class Rule:
    """One limit; a field left None does not limit."""

    scope: LimitScope
    subject: str
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    # The name its counters are kept under, the same in every replica (made once: every request reads it).
    counter: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counter", f"{self.scope.value}:{self.subject}")

    def of(self, dimension: Dimension) -> int | None:
        if dimension is Dimension.REQUESTS:
            return self.rpm
        return self.tpm if dimension is Dimension.TOKENS else self.concurrency

    def describe(self) -> str:
        return f"{self.scope.value} {self.subject!r}"


class RuleBook:
    """Every limit, indexed by scope and subject, as the gateway holds them between refreshes."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._by: dict[tuple[LimitScope, str], Rule] = {}
        for rule in rules:
            if rule.rpm is not None or rule.tpm is not None or rule.concurrency is not None:
                self._by[(rule.scope, rule.subject)] = rule

    def __bool__(self) -> bool:
        return bool(self._by)

    def __len__(self) -> int:
        return len(self._by)

    def applying(
        self, *, deployment: str, key: str | None = None, user: str | None = None, groups: Iterable[str] = ()
    ) -> tuple[Rule, ...]:
        """The limits a request counts against, narrowest first: its key's, its owner's, the owner's groups' (by
        name), the deployment's. A request without a key (gateway auth off) counts only against the deployment."""
        if not self._by:
            return ()
        wanted = [(LimitScope.KEY, key), (LimitScope.USER, user)]
        wanted += [(LimitScope.GROUP, g) for g in sorted(groups)]
        wanted.append((LimitScope.DEPLOYMENT, deployment))
        return tuple(r for s, n in wanted if n is not None and (r := self._by.get((s, n))) is not None)


# ------------------------------------------------------------------------------------------------ reservations


def requested_max_tokens(body: Mapping[str, Any]) -> int | None:
    """The answer's length the request asks for at most (``max_completion_tokens`` is the newer name)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def reservation(body: Mapping[str, Any], *, prompt_tokens: int, max_tokens_cap: int = DEFAULT_MAX_TOKENS) -> int:
    """Tokens a request reserves before it is sent: its prompt, plus the answer's ``max_tokens`` (the cap when it
    names none or more), times ``n`` answers. Settled with what it really used when the answer ends.

    ``prompt_tokens`` is the gateway's estimate (``protocol.estimate_prompt_tokens``, a character count over four):
    counting with the deployment's tokenizer would put milliseconds of work on every admitted request's path, and
    the settlement corrects the estimate within the same window."""
    asked = requested_max_tokens(body)
    answer = min(asked, max_tokens_cap) if asked is not None else max_tokens_cap
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return max(0, prompt_tokens) + answer * choices


@dataclass(frozen=True)
class Caps:
    """The most a request may ask of a deployment: ``max_tokens`` (also what a request naming none reserves) and
    ``n`` answers. A deployment's own caps, or the studio's defaults where it sets none."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    n: int = 16

    def excess(self, body: Mapping[str, Any]) -> tuple[str, str] | None:
        """(the message of OpenAI's 400, the parameter) when ``body`` asks more than a cap, else None."""
        for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):  # the last: the Responses API's
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > self.max_tokens:
                return f"'{name}' is {value}, more than this deployment's cap of {self.max_tokens}", name
        n = body.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and n > self.n:
            return f"'n' is {n}, more than this deployment's cap of {self.n}", "n"
        return None


# ------------------------------------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class Standing:
    """One applying limit as a store saw it when it admitted or refused a request (counts before this request)."""

    rule: Rule
    requests: int  # admitted in this window
    tokens: int  # reserved or used in this window
    active: int  # requests in flight


@dataclass(frozen=True)
class Verdict:
    """A store's answer: admitted, or refused by ``refused_by`` on ``dimension``; ``reset_s``: until the window ends."""

    standings: tuple[Standing, ...]
    reset_s: float
    asked_tokens: int
    refused_by: Rule | None = None
    dimension: Dimension | None = None

    @property
    def admitted(self) -> bool:
        return self.refused_by is None


def decide(standings: Iterable[Standing], asked_tokens: int) -> tuple[Rule, Dimension] | None:
    """The first limit (and what of it) a request of ``asked_tokens`` would exceed, or None: all admit it. The
    in-process store decides with this; the Redis script is the same rule in Lua."""
    for s in standings:
        rule = s.rule
        if rule.rpm is not None and s.requests + 1 > rule.rpm:
            return rule, Dimension.REQUESTS
        if rule.tpm is not None and s.tokens + asked_tokens > rule.tpm:
            return rule, Dimension.TOKENS
        if rule.concurrency is not None and s.active + 1 > rule.concurrency:
            return rule, Dimension.CONCURRENCY
    return None


def duration(seconds: float) -> str:
    """A duration as OpenAI's headers write it: ``120ms``, ``1s``, ``7.66s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def _tightest(verdict: Verdict, dimension: Dimension, asked: int) -> tuple[int, int] | None:
    """(limit, remaining after this request) of the applying limit with the least left on ``dimension``."""
    found: tuple[int, int] | None = None
    for s in verdict.standings:
        limit = s.rule.of(dimension)
        if limit is None:
            continue
        used = s.requests if dimension is Dimension.REQUESTS else s.tokens
        left = limit - used - (asked if verdict.admitted else 0)
        if found is None or left < found[1]:
            found = (limit, max(0, left))
    return found


def headers(verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token limits that applied (none when no such
    limit applied), and ``retry-after`` (whole seconds) on a refusal."""
    out: list[tuple[bytes, bytes]] = []
    reset = duration(verdict.reset_s).encode()
    for dimension, asked, word in (
        (Dimension.REQUESTS, 1, b"requests"),
        (Dimension.TOKENS, verdict.asked_tokens, b"tokens"),
    ):
        tight = _tightest(verdict, dimension, asked)
        if tight is not None:
            out += [
                (b"x-ratelimit-limit-" + word, str(tight[0]).encode()),
                (b"x-ratelimit-remaining-" + word, str(tight[1]).encode()),
                (b"x-ratelimit-reset-" + word, reset),
            ]
    if not verdict.admitted:
        out.append((b"retry-after", str(retry_after(verdict)).encode()))
    return out


def retry_after(verdict: Verdict) -> int:
    """Seconds to wait: to the next window for a per-minute limit; 1 for a concurrency limit (a slot frees when a
    request in flight ends, which nobody can foresee)."""
    if verdict.dimension is Dimension.CONCURRENCY:
        return 1
    return max(1, math.ceil(verdict.reset_s))


def refusal(verdict: Verdict) -> bytes:
    """The 429 body in OpenAI's shape, naming the limit, its use and when to retry."""
    rule, dimension = verdict.refused_by, verdict.dimension
    assert rule is not None
    assert dimension is not None
    standing = next(s for s in verdict.standings if s.rule == rule)
    wait = retry_after(verdict)
    if dimension is Dimension.REQUESTS:
        what, used, asked, kind = "requests per min (RPM)", standing.requests, 1, "requests"
    elif dimension is Dimension.TOKENS:
        what, used, asked, kind = "tokens per min (TPM)", standing.tokens, verdict.asked_tokens, "tokens"
    else:
        what, used, asked, kind = "requests at once", standing.active, 1, "rate_limit_exceeded"
    limit = rule.of(dimension)
    message = f"Rate limit reached for {rule.describe()} on {what}: Limit {limit}, Used {used}, Requested {asked}."
    if dimension is Dimension.TOKENS and limit is not None and asked > limit:
        message += " The request alone exceeds the limit: lower max_tokens or n, or shorten the prompt."
    else:
        message += f" Please try again in {duration(wait)}."
    error = {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}
    return orjson.dumps({"error": error})
