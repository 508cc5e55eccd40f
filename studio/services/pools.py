"""Pools in the database, and what their deployments hold of them."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from studio.access import check_admin
from studio.db import Database
from studio.errors import Conflict, InvalidSpec, NotFound
from studio.models import Cluster, Deployment, FineTune, Notebook, Pool, PoolPublic, PoolSpec
from studio.pools import Claim, Free, free_of
from studio.services.events import NewEvent, add_events
from studio.values import CAPACITY_FIELDS, DEFAULT_CLUSTER, JobStatus, PoolBase, Principal, Sharing

NOTEBOOK_OWNER = "notebook "  # how a notebook server's claim is named: "notebook USER[/SERVER]"
JOB_OWNER = "finetune "  # how a fine-tune's claim is named: "finetune NAME"


@dataclass(frozen=True)
class PoolUsage:
    pool: PoolPublic
    held: tuple[Claim, ...]
    free: Free


def sync_detected_pools(*, db: Database, cluster: str, detected: list[PoolBase]) -> list[str]:
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
            capacity = {field: getattr(d, field) for field in CAPACITY_FIELDS}
            if pool.id is not None and all(getattr(pool, f) == v for f, v in capacity.items()):
                continue
            pool.sqlmodel_update(capacity)
            if pool.detected:
                pool.sharing = Sharing.WHOLE if d.gpu_count else Sharing.NONE
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
            pool.sqlmodel_update(dict(spec))
            pool.detected = False
            session.add(pool)
        session.commit()


def apply_pool(*, db: Database, actor: Principal, spec: PoolSpec) -> tuple[PoolPublic, list[str]]:
    """Create the pool ``spec`` names, or update it with the fields ``spec`` sets (``model_fields_set``; a new
    pool takes the defaults for the rest); an admin's. Returns the pool and the fields that changed. Refused:
    a change of ``cluster`` (fixed once the pool exists), a cluster that is not registered, and, for a pool whose
    capacity a backend detects, a capacity field (``CAPACITY_FIELDS``) other than what was detected."""
    check_admin(actor, doing="configure pools")
    stated = {f: getattr(spec, f) for f in spec.model_fields_set if f != "name"}
    with db.session() as session:
        pool = session.exec(select(Pool).where(Pool.name == spec.name)).first()
        cluster = stated.get("cluster", pool.cluster if pool is not None else DEFAULT_CLUSTER)
        if pool is not None and cluster != pool.cluster:
            raise Conflict(
                f"pool {spec.name!r} is on cluster {pool.cluster!r}, fixed once the pool exists",
                hint=f"make a pool of another name on {cluster!r} and deploy there",
                fields=[{"path": "spec.cluster", "message": "fixed once the pool exists"}],
            )
        if cluster != DEFAULT_CLUSTER and session.exec(select(Cluster).where(Cluster.name == cluster)).first() is None:
            raise NotFound(f"no cluster named {cluster!r}", hint="register it first (`cove cluster add`)")
        if pool is not None and pool.detected:
            differing = sorted(f for f in CAPACITY_FIELDS if f in stated and stated[f] != getattr(pool, f))
            if differing:
                raise InvalidSpec(
                    f"pool {spec.name!r} has the capacity its backend detects: {', '.join(differing)} cannot be set",
                    hint="leave them out (the backend keeps them as it finds the nodes)",
                    fields=[{"path": f, "message": "detected by the backend"} for f in differing],
                )
        created = pool is None
        pool = pool or Pool(**dict(PoolSpec(name=spec.name)))
        changed = sorted(f for f, v in stated.items() if created or getattr(pool, f) != v)
        if not changed and not created:
            return PoolPublic.model_validate(pool), []
        pool.sqlmodel_update(stated)
        session.add(pool)
        said = "created" if created else "updated: " + ", ".join(changed)
        add_events(session, kind="pool", name=spec.name, actor=actor.name, events=[NewEvent("Configured", said)])
        session.commit()
        session.refresh(pool)
        return PoolPublic.model_validate(pool), changed


def claims_in(session: Session, *, pool_id: int, exclude: str | None = None) -> list[Claim]:
    """What deployments, notebook servers and fine-tunes hold of the pool: deployments' replicas (deleting ones still
    hold until they are gone), then each running notebook (owner "notebook USER[/SERVER]"), then each unfinished
    fine-tune (owner "finetune NAME"). ``exclude`` names a claim's owner. Columns, not ORM objects: admission reads
    every claim of a pool on each create and page view."""
    deployments = session.execute(
        sa.select(col(Deployment.name), col(Deployment.resources), col(Deployment.replicas), col(Deployment.placed))
        .where(col(Deployment.pool_id) == pool_id)
        .order_by(col(Deployment.id))
    ).all()
    notebooks = session.execute(
        sa.select(col(Notebook.name), col(Notebook.resources))
        .where(col(Notebook.pool_id) == pool_id)
        .order_by(col(Notebook.id))
    ).all()
    jobs = session.execute(
        sa.select(col(FineTune.name), col(FineTune.resources))
        .where(col(FineTune.pool_id) == pool_id, col(FineTune.status).not_in(JobStatus.finished_states()))
        .order_by(col(FineTune.id))
    ).all()
    # a deployment's replicas stay on the GPUs its backend reported them on (local); the rest are placed by admission
    held = [Claim(name, res, n, on=tuple(map(tuple, placed)) or None) for name, res, n, placed in deployments]
    held += [Claim(NOTEBOOK_OWNER + name, resources) for name, resources in notebooks]  # a server is one replica
    held += [Claim(JOB_OWNER + name, resources) for name, resources in jobs]
    return [claim for claim in held if claim.owner != exclude]


def find_pool(session: Session, *, name: str) -> Pool:
    pool = session.exec(select(Pool).where(Pool.name == name)).first()
    if pool is None:
        known = ", ".join(session.exec(select(Pool.name)).all()) or "none"
        raise NotFound(f"no pool named {name!r}", hint=f"known pools: {known}")
    return pool


def get_pool(*, db: Database, name: str) -> PoolPublic:
    with db.session() as session:
        return PoolPublic.model_validate(find_pool(session, name=name))


def lock_pool(session: Session, pool: Pool) -> None:
    """Serialize admissions to one pool: a no-op write takes the row lock (PostgreSQL) or the write lock (SQLite)
    until the caller's transaction ends, so two concurrent requests cannot both take the last free capacity."""
    session.exec(sa.update(Pool).where(col(Pool.id) == pool.id).values(name=pool.name))


def list_pools(*, db: Database) -> list[PoolUsage]:
    with db.session() as session:
        usage = []
        for pool in session.exec(select(Pool).order_by(col(Pool.name))).all():
            held = claims_in(session, pool_id=pool.id or 0)
            usage.append(PoolUsage(PoolPublic.model_validate(pool), tuple(held), free_of(pool, held)))
        return usage
