"""``/pools``: capacity pools, each with what holds it and what is free (pools are configured or detected, not
made through the API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.errors import NotFound
from studio.models import FreeCapacity, Held, PoolUsagePublic
from studio.services import pools
from studio.values import Principal, Purpose

router = APIRouter(prefix="/pools", tags=["pools"])
READ = allowed("pools:read")


def public(usage: pools.PoolUsage) -> PoolUsagePublic:
    free = usage.free
    return PoolUsagePublic(
        pool=usage.pool,
        held=[Held(owner=c.owner, resources=c.resources, replicas=c.replicas) for c in usage.held],
        free=FreeCapacity(
            cpu=free.cpu,
            memory_mib=free.memory_mib,
            gpus=free.gpus,
            gpu_memory_mib=list(free.gpu_memory_mib),
            gpu_total=free.gpu_total,
            summary=free.describe(),
        ),
    )


def _all(request: Request) -> list[PoolUsagePublic]:
    return [public(u) for u in pools.list_pools(db=request.app.state.db)]


@router.get("", response_model=Page[PoolUsagePublic])
def list_pools(
    request: Request,
    at: Annotated[Window, Depends(window)],
    _actor: Principal = READ,
    cluster: str | None = None,
    purpose: Purpose | None = None,
) -> Page[PoolUsagePublic]:
    """Every pool (everyone reads them), by name, with its holders and free capacity; filtered by cluster and
    purpose."""
    found = [
        u
        for u in _all(request)
        if (cluster is None or u.pool.cluster == cluster) and (purpose is None or u.pool.purpose == purpose)
    ]
    return page(found, at)


@router.get("/{name}", response_model=PoolUsagePublic)
def get_pool(request: Request, name: str, _actor: Principal = READ) -> PoolUsagePublic:
    found = _all(request)
    for usage in found:
        if usage.pool.name == name:
            return usage
    known = ", ".join(u.pool.name for u in found) or "none"
    raise NotFound(f"no pool named {name!r}", hint=f"known pools: {known}")
