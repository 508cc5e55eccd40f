"""A canary over real HTTP: a deployment following production sends its share of requests to the staging version's
replicas, through the gateway, and usage and metrics are kept per version. Replicas are scripted runtimes run by
the real controller."""

from __future__ import annotations

import collections
import math
from pathlib import Path

import httpx
import pytest
from sqlmodel import col, func, select

from studio.controller import Controller
from studio.db import Database
from studio.models import ApiKeyCreate, DeploymentCreate, ModelCreate, UsageRecord
from studio.services import aliases, canary, deployments, keys, models
from studio.values import Resources
from tests.integration.conftest import GatewayServer, add_fake_image, wait_until, write_stub_model
from tests.people import ADMIN

REQUESTS, SHARE = 400, 20  # 99.9 % interval [54, 106]: apart from 10 % (40) or 30 % (120)


def _binomial_interval(n: int, p: float, z: float = 3.29) -> tuple[float, float]:
    """The counts a fair split lands within 99.9 % of the time (normal approximation)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


@pytest.mark.runtime
def test_the_canary_answers_its_share_and_usage_is_kept_per_version(
    db: Database, tmp_path: Path, controller: Controller, gateway: GatewayServer
) -> None:
    for i in range(2):
        models.add_model(
            actor=ADMIN,
            db=db,
            data=ModelCreate(name="qa", source=str(write_stub_model(tmp_path / f"v{i}")), new_version=i > 0),
            cache_dir=tmp_path / "cache",
        )
    aliases.promote(db=db, actor=ADMIN, model="qa", version=1)
    aliases.set_alias(db=db, actor=ADMIN, model="qa", alias="staging", version=2)
    deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=DeploymentCreate(
            name="svc",
            model="qa",
            follows="production",
            image=add_fake_image(db, "scripted_runtime.py"),
            resources=Resources(cpu=0.5, memory_mib=256),
        ),
    )
    canary.set_canary(db=db, actor=ADMIN, name="svc", share=SHARE)

    def both_ready() -> bool:
        route = gateway.app.table.routes.get("svc")
        return route is not None and route.canary is not None

    wait_until(both_ready, timeout=60, what="svc and its canary to be ready and routed")
    port = {
        deployments.get_deployment(actor=ADMIN, db=db, name=n).endpoints[0].rsplit(":", 1)[1]: v
        for n, v in (("svc", 1), ("svc-canary", 2))
    }
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="app")).key
    answered: collections.Counter[int] = collections.Counter()
    body = {"model": "svc", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(REQUESTS):
            reply = client.post("/v1/chat/completions", json=body).json()
            assert reply["model"] == "svc"  # the client sees the deployment it called, whichever version answered
            answered[port[reply["choices"][0]["message"]["content"].rsplit(" ", 1)[1]]] += 1
        metrics = client.get("/metrics").text
    lo, hi = _binomial_interval(REQUESTS, SHARE / 100)
    assert lo <= answered[2] <= hi, answered
    assert answered[1] + answered[2] == REQUESTS

    def per_version() -> dict[int | None, int]:
        with db.session() as session:
            rows = session.exec(
                select(UsageRecord.model_version, func.count())
                .where(UsageRecord.deployment == "svc")
                .group_by(col(UsageRecord.model_version))
            ).all()
        return dict(rows)

    wait_until(lambda: per_version() == dict(answered), timeout=20, what="usage of every request, per version")
    line = 'cove_gateway_requests_total{code="200",deployment="svc",endpoint="chat.completions",model_version="2"}'
    assert f"{line} {float(answered[2])}" in metrics
