"""Pools in the database, and what their deployments hold of them."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from studio.backends.base import DetectedPool
from studio.db import Database
from studio.errors import NotFound
from studio.models import Deployment, Notebook, Pool, PoolPublic, PoolSpec, Resources, Sharing
from studio.pools import Capacity, Claim, Free, free_of

NOTEBOOK_OWNER = "notebook "  # how a notebook server's claim is named: "notebook USER[/SERVER]"


@dataclass(frozen=True)
class PoolUsage:
    pool: PoolPublic
    held: tuple[Claim, ...]
    free: Free


def sync_detected_pools(*, db: Database, cluster: str, detected: list[DetectedPool]) -> list[str]:
    """Capacity as a cluster's backend finds it (the machine; nodes labelled with their pool): pools it finds are
    made or get the capacity found (a configured pool keeps its purpose, sharing, quotas and groups); pools made
    from an earlier finding that are no longer found drop to no capacity. Returns the problems, in words."""
    problems = []
    with db.session() as session:
        found = set()
        for d in detected:
            pool = session.exec(select(Pool).where(Pool.name == d.name)).first()
            if pool is None:
                pool = Pool(name=d.name, detected=True, cluster=cluster, node_selector=dict(d.node_selector))
            elif pool.cluster != cluster:
                problems.append(
                    f"pool {d.name!r} is on cluster {pool.cluster!r}: nodes of {cluster!r} labelled for it do not count"
                )
                continue
            found.add(d.name)
            changed = (pool.cpu_cores, pool.memory_mib, pool.gpu_model, pool.gpu_count, pool.gpu_memory_mib) != (
                d.cpu_cores, d.memory_mib, d.gpu_model, d.gpu_count, d.gpu_memory_mib,
            )  # fmt: skip
            if pool.id is not None and not changed:
                continue
            pool.cpu_cores, pool.memory_mib = d.cpu_cores, d.memory_mib
            pool.gpu_model, pool.gpu_count, pool.gpu_memory_mib = d.gpu_model, d.gpu_count, d.gpu_memory_mib
            if pool.detected:
                pool.sharing = (Sharing.WHOLE if d.gpu_count else Sharing.NONE).value
            session.add(pool)
        gone = session.exec(
            select(Pool).where(Pool.cluster == cluster, col(Pool.detected).is_(True), col(Pool.name).not_in(found))
        ).all()
        for pool in gone:
            if pool.cpu_cores or pool.memory_mib or pool.gpu_count:
                pool.cpu_cores = pool.memory_mib = pool.gpu_count = 0
                session.add(pool)
        session.commit()
    return problems


def sync_configured_pools(*, db: Database, specs: list[PoolSpec]) -> None:
    """Create or update the configured pools (by name); pools not listed are left as they are."""
    with db.session() as session:
        for spec in specs:
            pool = session.exec(select(Pool).where(Pool.name == spec.name)).first() or Pool(name=spec.name)
            for key, value in spec.model_dump(mode="json").items():
                setattr(pool, key, value)
            pool.detected = False
            session.add(pool)
        session.commit()


def capacity_of(pool: Pool) -> Capacity:
    return Capacity(
        name=pool.name,
        sharing=Sharing(pool.sharing),
        cpu=pool.cpu_cores,
        memory_mib=pool.memory_mib,
        gpus=pool.gpu_count,
        gpu_memory_mib=pool.gpu_memory_mib,
        slice_mib=pool.slice_mib,
        quota_gpus=pool.quota_gpus,
        quota_cpu=pool.quota_cpu,
        quota_memory_mib=pool.quota_memory_mib,
    )


def resources_of(row: Deployment | Notebook) -> Resources:
    """What one replica of a deployment, or one notebook server, asks for."""
    return Resources(
        cpu=row.cpu,
        memory_mib=row.memory_mib,
        gpus=row.gpus,
        gpu_memory_mib=row.gpu_memory_mib,
        gpu_cores=row.gpu_cores,
    )


def claims_in(session: Session, *, pool_id: int, exclude: str | None = None) -> list[Claim]:
    """What deployments and notebook servers hold of the pool: deployments' replicas (deleting ones still hold until
    they are gone), then each running notebook (owner "notebook USER[/SERVER]"). ``exclude`` names a deployment."""
    deployments = [c for c in _claims(session, Deployment, pool_id) if c.owner != exclude]
    return deployments + _claims(session, Notebook, pool_id, owner_prefix=NOTEBOOK_OWNER)


def _claims(
    session: Session, table: type[Deployment] | type[Notebook], pool_id: int, owner_prefix: str = ""
) -> list[Claim]:
    """The claims of one table's rows in a pool, oldest first. Columns, not ORM objects: admission reads every claim
    of a pool on each create and page view. A notebook server is one replica."""
    t = table
    replicas = col(Deployment.replicas) if t is Deployment else sa.literal(1)
    columns = (t.name, t.cpu, t.memory_mib, t.gpus, t.gpu_memory_mib, t.gpu_cores)
    rows = session.execute(
        sa.select(*(col(c) for c in columns), replicas).where(col(t.pool_id) == pool_id).order_by(col(t.id))
    ).all()
    return [
        Claim(
            owner=owner_prefix + name,
            resources=Resources(cpu=cpu, memory_mib=mem, gpus=gpus, gpu_memory_mib=gpu_mem, gpu_cores=cores),
            replicas=n,
        )
        for name, cpu, mem, gpus, gpu_mem, cores, n in rows
    ]


def find_pool(session: Session, *, name: str) -> Pool:
    pool = session.exec(select(Pool).where(Pool.name == name)).first()
    if pool is None:
        known = ", ".join(session.exec(select(Pool.name)).all()) or "none"
        raise NotFound(f"no pool named {name!r}", hint=f"known pools: {known}")
    return pool


def lock_pool(session: Session, pool: Pool) -> None:
    """Serialize admissions to one pool: a no-op write takes the row lock (PostgreSQL) or the write lock (SQLite)
    until the caller's transaction ends, so two concurrent requests cannot both take the last free capacity."""
    session.exec(sa.update(Pool).where(col(Pool.id) == pool.id).values(name=pool.name))


def list_pools(*, db: Database) -> list[PoolUsage]:
    with db.session() as session:
        usage = []
        for pool in session.exec(select(Pool).order_by(col(Pool.name))).all():
            held = claims_in(session, pool_id=pool.id or 0)
            usage.append(PoolUsage(PoolPublic.model_validate(pool), tuple(held), free_of(capacity_of(pool), held)))
        return usage
