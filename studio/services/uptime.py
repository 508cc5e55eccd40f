"""Instance time: how long each deployment ran how many replicas, on which GPU type, at which hourly price; and
what that costs over a period.

The controller reports, once a pass, the replicas each deployment it reconciled has (``record``): every replica its
backend runs, starting, ready, restarting or stopping, since it holds its share of the pool in each; not one still
waiting for a node. A change of count, of the pool's
GPU type or of the hourly price closes the deployment's open ``InstanceSpan`` and opens the next, so a price
changed later never rewrites time already run, and a restarted controller continues the open span (the replicas
it adopts ran meanwhile). A deployment deleted, or asked to be, stops being billed at once.

Whom instance time is billed to: the group the deployment is shared with, or its owner when it is shared with none
(as they were when the span opened).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select

from studio.db import Database
from studio.models import Deployment, InstanceSpan, Pool, Price
from studio.prices import Price as PriceValue


def hourly_on(price: Price | None, gpu: str) -> int:
    """The price of a replica-hour on ``gpu``: its GPU type's, else the deployment's ``hourly`` (0 without a price)."""
    if price is None:
        return 0
    return int((price.hourly_gpu or {}).get(gpu, price.hourly))


def record(*, db: Database, running: Mapping[str, int], now: datetime) -> None:
    """Note the replicas each deployment in ``running`` has now; close the spans of deployments that are gone. Writes
    only on a change (a pass that changes nothing reads three small tables)."""
    with db.session() as session:
        open_spans = select(InstanceSpan).where(col(InstanceSpan.ended_at).is_(None))
        spans = {s.deployment: s for s in session.exec(open_spans)}
        rows = session.exec(
            select(Deployment.name, Deployment.owner, Deployment.group, Pool.gpu_model).join(
                Pool, col(Deployment.pool_id) == Pool.id
            )
        ).all()
        known = {name: (owner, group, gpu or "") for name, owner, group, gpu in rows}
        prices = {p.deployment: p for p in session.exec(select(Price))}
        changed = False
        for name in sorted(set(running) | set(spans)):
            if name not in running and name in known:
                continue  # not reconciled this pass (its cluster did not answer): its replicas run on, unseen
            count = running.get(name, 0) if name in known else 0
            owner, group, gpu = known.get(name, ("", None, ""))
            hourly = hourly_on(prices.get(name), gpu)
            span = spans.get(name)
            if span is not None and (span.replicas, span.gpu, span.hourly) == (count, gpu, hourly):
                continue
            if span is None and count == 0:
                continue
            if span is not None:
                span.ended_at = now
                session.add(span)
            if count > 0:
                session.add(
                    InstanceSpan(
                        deployment=name, owner=owner, group=group, gpu=gpu, replicas=count, hourly=hourly,
                        started_at=now,
                    )
                )  # fmt: skip
            changed = True
        if changed:
            session.commit()


@dataclass(frozen=True)
class Run:
    """Instance time of one deployment on one GPU type at one hourly price, billed to one payer, over a period."""

    deployment: str
    gpu: str
    hourly: int
    payer_scope: str  # user | group
    payer: str
    replica_seconds: float

    @property
    def cost(self) -> int:
        return PriceValue(hourly=self.hourly).instance_cost(self.replica_seconds)


def runs(*, db: Database, since: datetime | None, until: datetime | None, now: datetime) -> list[Run]:
    """Replica-seconds from ``since`` to before ``until`` (an open span counts up to ``now``), summed per deployment,
    GPU type, hourly price and payer; cost rounded half-even once per such run."""
    end = min(until, now) if until is not None else now
    query = select(InstanceSpan).where(col(InstanceSpan.started_at) < end)
    if since is not None:
        query = query.where(sa.or_(col(InstanceSpan.ended_at).is_(None), col(InstanceSpan.ended_at) > since))
    seconds: dict[tuple[str, str, int, str, str], float] = defaultdict(float)
    with db.session() as session:
        for span in session.exec(query):
            start = max(span.started_at, since) if since is not None else span.started_at
            stop = min(span.ended_at or end, end)
            if stop <= start:
                continue
            payer = ("group", span.group) if span.group else ("user", span.owner)
            seconds[(span.deployment, span.gpu, span.hourly, *payer)] += span.replicas * (stop - start).total_seconds()
    return [Run(*k, replica_seconds=v) for k, v in sorted(seconds.items())]
