"""Usage metering: one record per gateway request, summed per key, deployment and day."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, func, select

from studio.db import Database, utcnow
from studio.models import ApiKey, Traffic, UsageRecord, UsageSummary
from studio.values import Principal

CANCELLED = 499  # the client went away before the answer ended (nginx's code; the gateway's too)


def record_usage(*, db: Database, records: Sequence[Mapping[str, Any]]) -> None:
    """Write a batch of records (UsageRecord's columns as mappings) and stamp the keys' last use, in one
    transaction. One executemany insert: the gateway flushes thousands a second and ORM objects cost 7× more.
    A record whose ``request_id`` is already in the table is skipped (insert-or-ignore): the gateway's spool may
    hand the same request over again after a crash, and it is counted once."""
    if not records:
        return
    with db.session() as session:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        session.execute(insert(UsageRecord).on_conflict_do_nothing(index_elements=["request_id"]), list(records))
        used = {r["api_key_id"] for r in records if r["api_key_id"] is not None}
        if used:
            session.exec(sa.update(ApiKey).where(col(ApiKey.id).in_(used)).values(last_used_at=utcnow()))
        session.commit()


def usage_summary(
    *, db: Database, actor: Principal, since: datetime | None = None, until: datetime | None = None
) -> list[UsageSummary]:
    """Requests and tokens per key, deployment and day, of requests made from ``since`` to before ``until``: every
    key's for an admin, a member's own keys'. Errors and cancels are counted apart from served requests, and the
    tokens of errors apart from the billed ones (``UsageSummary``)."""
    day = func.substr(sa.cast(UsageRecord.created_at, sa.String), 1, 10)
    status, tokens = col(UsageRecord.status_code), col(UsageRecord.prompt_tokens) + col(UsageRecord.completion_tokens)
    error = sa.and_(status >= 400, status != CANCELLED)
    billed = sa.not_(error)

    def total(condition: Any, value: Any = 1) -> Any:
        return func.sum(sa.case((condition, value), else_=0))

    with db.session() as session:
        query = (
            sa.select(
                col(ApiKey.name),
                col(UsageRecord.deployment),
                day,
                func.count(),
                total(billed, col(UsageRecord.prompt_tokens)),
                total(billed, col(UsageRecord.completion_tokens)),
                total(status < 400),
                total(status == CANCELLED),
                total(error),
                total(error, tokens),
                total(billed, col(UsageRecord.cost_micros)),
            )
            .select_from(UsageRecord)
            .join(ApiKey, col(UsageRecord.api_key_id) == ApiKey.id, isouter=True)
            .group_by(ApiKey.name, UsageRecord.deployment, day)
            .order_by(day, ApiKey.name, UsageRecord.deployment)
        )
        if since is not None:
            query = query.where(col(UsageRecord.created_at) >= since)
        if until is not None:
            query = query.where(col(UsageRecord.created_at) < until)
        if not actor.is_admin:
            query = query.where(col(ApiKey.owner) == actor.name)
        return [
            UsageSummary(
                key=k,
                deployment=d,
                day=str(t),
                requests=n,
                prompt_tokens=int(p or 0),
                completion_tokens=int(c or 0),
                served=int(ok or 0),
                cancelled=int(gone or 0),
                errors=int(bad or 0),
                error_tokens=int(lost or 0),
                cost_micros=int(cost or 0),
            )
            for k, d, t, n, p, c, ok, gone, bad, lost, cost in session.execute(query)
        ]


def usage_records(*, db: Database, deployment: str | None = None, limit: int = 1000) -> list[UsageRecord]:
    """Newest first; detached rows, for reports and tests."""
    with db.session() as session:
        query = select(UsageRecord).order_by(col(UsageRecord.id).desc()).limit(limit)
        if deployment:
            query = query.where(UsageRecord.deployment == deployment)
        return list(session.exec(query).all())


def traffic(*, db: Database, deployment: str, since: datetime) -> list[Traffic]:
    """Requests, tokens, errors and mean latencies of ``deployment`` per minute since ``since``, oldest first."""
    minute = func.substr(sa.cast(UsageRecord.created_at, sa.String), 1, 16)
    query = (
        sa.select(
            minute,
            func.count(),
            func.sum(sa.case((col(UsageRecord.status_code) >= 400, 1), else_=0)),
            func.sum(col(UsageRecord.prompt_tokens)),
            func.sum(col(UsageRecord.completion_tokens)),
            func.avg(col(UsageRecord.latency_ms)),
            func.avg(col(UsageRecord.ttft_ms)),
        )
        .where(col(UsageRecord.deployment) == deployment, col(UsageRecord.created_at) >= since)
        .group_by(minute)
        .order_by(minute)
    )
    with db.session() as session:
        return [
            Traffic(
                minute=str(m),
                requests=n,
                errors=int(e or 0),
                prompt_tokens=int(p or 0),
                completion_tokens=int(c or 0),
                latency_ms=float(lat or 0.0),
                ttft_ms=float(t) if t is not None else None,
            )
            for m, n, e, p, c, lat, t in session.execute(query)
        ]
