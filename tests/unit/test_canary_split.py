"""The gateway's canary split: which version a request goes to, by share, deterministic under a seed."""

from __future__ import annotations

import random

from studio.gateway.routes import RouteTable, choose_version
from studio.values import Route

CANARY = Route("svc-canary", "svc-canary", ("http://c:1",), model_version=2, deployment="svc-canary")
ROUTE = Route("svc", "svc", ("http://p:1",), created=5, model_version=1, canary=CANARY, canary_share=20)


def test_a_draw_inside_the_share_goes_to_the_canary_under_the_deployments_name() -> None:
    chosen = choose_version(ROUTE, 0.19)
    assert (chosen.name, chosen.endpoints, chosen.model_version, chosen.deployment) == (
        "svc",
        ("http://c:1",),
        2,
        "svc-canary",
    )
    assert chosen.created == 5
    assert choose_version(ROUTE, 0.2) is ROUTE


def test_no_canary_or_no_share_always_production() -> None:
    plain = Route("svc", "svc", ("http://p:1",))
    assert choose_version(plain, 0.0) is plain
    off = Route("svc", "svc", ("http://p:1",), canary=CANARY, canary_share=0)
    assert choose_version(off, 0.0) is off


def test_a_seeded_table_splits_the_same_way_every_time() -> None:
    def versions(seed: int) -> list[int]:
        table = RouteTable(draws=random.Random(seed))
        return [table.split(ROUTE).model_version for _ in range(1000)]

    assert versions(7) == versions(7)
    assert 150 <= versions(7).count(2) <= 250
