"""The model square, shaped for the page: one offer per deployment a member may call — its price, the rate limits
that apply to the member there, its context length — and the code to call it. Pure: the page passes what the
facade read.

A key's secret is stored only as a hash and shown once, so the snippet cannot carry it: it names the member's key by
its prefix and reads the secret from ``COVE_API_KEY``; a member without a key is told to create one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from studio.models import ApiKeyPublic, DeploymentPublic, LimitPublic, PricePublic
from studio.prices import plain

NO_KEY = "<create a key on the API keys page>"


@dataclass(frozen=True)
class Offer:
    name: str
    model: str
    status: str
    input_per_m: str  # "0.15 USD", or "free"
    output_per_m: str
    hourly: str
    limits: str  # "60 requests/min (deployment); 10 000 tokens/min (you)", or "none"
    context: int | None  # tokens; None when neither the plan nor the model's config says


def context_length(planned_args: Sequence[str], config: Mapping[str, Any]) -> int | None:
    """The context a deployment serves: its ``--max-model-len`` when the memory plan set one, else the model's own
    (``max_position_embeddings``, as transformers' configs name it)."""
    args = list(planned_args)
    for i, arg in enumerate(args):
        if arg.startswith("--max-model-len="):
            return int(arg.split("=", 1)[1])
        if arg == "--max-model-len" and i + 1 < len(args):
            return int(args[i + 1])
    found = config.get("max_position_embeddings") or (config.get("text_config") or {}).get("max_position_embeddings")
    return int(found) if isinstance(found, int) else None


def _price(micros: int, currency: str, unit: str) -> str:
    return "free" if micros == 0 else f"{plain(micros)} {currency}{unit}"


def describe_limits(deployment: str, limits: Sequence[LimitPublic], *, user: str, groups: frozenset[str]) -> str:
    """The rate limits a member's request to ``deployment`` counts against, in words (their keys' apart)."""
    whose = {("deployment", deployment): "deployment", ("user", user): "you"}
    whose.update({("group", g): f"group {g}" for g in groups})
    rank = {"user": 0, "group": 1, "deployment": 2}  # narrowest first, as the gateway admits
    applying = [x for x in limits if (x.scope.value, x.subject) in whose]
    parts = []
    for limit in sorted(applying, key=lambda x: (rank[x.scope.value], x.subject)):
        label = whose[(limit.scope.value, limit.subject)]
        values = [f"{limit.rpm} requests/min" if limit.rpm else "", f"{limit.tpm} tokens/min" if limit.tpm else ""]
        values.append(f"{limit.concurrency} at once" if limit.concurrency else "")
        parts.append(f"{', '.join(v for v in values if v)} ({label})")
    return "; ".join(parts) or "none"


def offers(
    deployments: Sequence[DeploymentPublic],
    prices: Sequence[PricePublic],
    limits: Sequence[LimitPublic],
    contexts: Mapping[str, int | None],
    *,
    user: str,
    groups: frozenset[str],
    currency: str,
) -> list[Offer]:
    by_name = {p.deployment: p for p in prices}
    found = []
    for d in deployments:
        price = by_name.get(d.name)
        found.append(
            Offer(
                name=d.name,
                model=f"{d.model} v{d.model_version}",
                status=d.status.value,
                input_per_m=_price(price.input_per_m if price else 0, currency, " / 1M tokens"),
                output_per_m=_price(price.output_per_m if price else 0, currency, " / 1M tokens"),
                hourly=_price(price.hourly if price else 0, currency, " / replica-hour"),
                limits=describe_limits(d.name, limits, user=user, groups=groups),
                context=contexts.get(d.name),
            )
        )
    return found


def key_hint(keys: Sequence[ApiKeyPublic], deployment: str) -> str:
    """Which of the member's keys the snippet names: an active one that may call ``deployment``."""
    for key in keys:
        if key.revoked_at is None and (key.deployments is None or deployment in key.deployments):
            return f"your key {key.name} ({key.prefix}…)"
    return NO_KEY


def snippet(gateway_url: str, deployment: str, key: str) -> str:
    """Python that calls ``deployment`` through the gateway with the ``openai`` SDK."""
    return (
        "import os\n"
        "from openai import OpenAI\n\n"
        f"# COVE_API_KEY: {key}\n"
        f'client = OpenAI(base_url="{gateway_url.rstrip("/")}/v1", api_key=os.environ["COVE_API_KEY"])\n'
        "answer = client.chat.completions.create(\n"
        f'    model="{deployment}",\n'
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(answer.choices[0].message.content)\n"
    )
