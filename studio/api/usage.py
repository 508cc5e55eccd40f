"""``/usage``: what the gateway served — requests and tokens per key, deployment and day, and one deployment's
traffic per minute."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.db import utcnow
from studio.models import Traffic, UsageSummary
from studio.services import deployments, usage
from studio.values import Principal

router = APIRouter(prefix="/usage", tags=["usage"])
READ = allowed("usage:read")
Since = Annotated[datetime | None, Query(description="From this time on (ISO 8601; default: 7 days ago).")]


@router.get("", response_model=Page[UsageSummary])
def usage_summary(
    request: Request,
    at: Annotated[Window, Depends(window)],
    actor: Principal = READ,
    since: Since = None,
    until: Annotated[datetime | None, Query(description="Before this time (ISO 8601; default: now).")] = None,
    key: Annotated[str | None, Query(description="Only this API key's requests.")] = None,
    deployment: str | None = None,
) -> Page[UsageSummary]:
    """Requests and tokens per key, deployment and day, oldest day first: every key's for an admin, a member's
    own keys'."""
    found = [
        r
        for r in usage.usage_summary(
            db=request.app.state.db, actor=actor, since=since or utcnow() - timedelta(days=7), until=until
        )
        if (key is None or r.key == key) and (deployment is None or r.deployment == deployment)
    ]
    return page(found, at)


@router.get("/traffic/{deployment}", response_model=list[Traffic])
def traffic(
    request: Request,
    deployment: str,
    actor: Principal = READ,
    since: Annotated[datetime | None, Query(description="From this time on (default: an hour ago).")] = None,
) -> list[Traffic]:
    """A deployment's requests, errors, tokens and mean latencies per minute, oldest first (a deployment the
    caller may see)."""
    db = request.app.state.db
    deployments.get_deployment(db=db, actor=actor, name=deployment)  # NotFound / Forbidden as for the deployment
    return usage.traffic(db=db, deployment=deployment, since=since or utcnow() - timedelta(hours=1))
