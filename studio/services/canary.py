"""Canaries: a deployment that follows its model's ``production`` sends a share of its requests to the ``staging``
version.

The staging version runs as a companion deployment, ``<name>-canary``: the parent's image, pool, resources and
arguments, one replica, owned as the parent is, following ``staging`` (so it rolls when staging moves) and deleted
with the parent. The gateway's route for the parent carries the companion's replicas and the share
(``studio.gateway.routes.RouteTable.split``); usage and latency are kept per version.
"""

from __future__ import annotations

from sqlmodel import select

from studio.db import Database, utcnow
from studio.errors import Conflict, InvalidSpec
from studio.models import Deployment, DeploymentPublic, Image, Model, ModelVersion, Pool
from studio.services import plans
from studio.services.deployments import KIND, admit_claim, find_row, mark_deleting, public_of
from studio.services.events import NewEvent, add_events
from studio.services.models import alias_version
from studio.values import Principal

SUFFIX = "-canary"


def canary_name(name: str) -> str:
    return name + SUFFIX


def set_canary(*, db: Database, actor: Principal, name: str, share: int) -> DeploymentPublic:
    """Send ``share`` percent (1–99) of ``name``'s requests to its model's staging version; 0 stops the canary
    (its replicas are stopped and its deployment removed). ``name`` must follow ``production`` and its model must
    have a staging version; the canary's replica is admitted against the pool like any other."""
    if not 0 <= share < 100:
        raise InvalidSpec(f"a canary's share is a percentage from 0 to 99, not {share}", hint="0 turns it off")
    with db.session() as session:
        row = find_row(session, name, actor)
        if row.canary_of is not None:
            raise InvalidSpec(f"{name!r} is itself a canary", hint="set the share on the deployment it serves")
        if row.deleting:
            raise Conflict(f"deployment {name!r} is being deleted", hint="create it again once it is gone")
        companion = session.exec(select(Deployment).where(Deployment.canary_of == row.id)).first()
        before = row.canary_share
        if share == 0:
            if companion is not None and not companion.deleting:
                mark_deleting(session, companion, actor=actor.name, text=f"canary of {name} turned off")
        else:
            if row.follows != "production":
                raise InvalidSpec(
                    f"deployment {name!r} does not follow its model's production version",
                    hint=f"create it with `cove deploy create MODEL@production --name {name}` to give it a canary",
                )
            version = session.get(ModelVersion, row.model_version_id)
            model = session.get(Model, version.model_id) if version else None
            assert model is not None
            staging = alias_version(session, model=model.name, alias="staging")
            if companion is None or companion.deleting:
                if companion is not None:
                    raise Conflict(
                        f"the previous canary of {name!r} is still stopping", hint="run the command again shortly"
                    )
                pool = session.get(Pool, row.pool_id)
                assert pool is not None and staging.id is not None  # noqa: PT018
                image = session.get(Image, row.image_id)
                assert image is not None
                sized = plans.size_deployment(  # the staging version may need more memory than production
                    session, version=staging, runtime=image.runtime, pool=pool, resources=row.resources,
                    args=row.runtime_args,
                )  # fmt: skip
                admit_claim(session, pool, name=canary_name(name), resources=row.resources, replicas=1)
                companion = Deployment(
                    name=canary_name(name),
                    runtime_args=row.runtime_args,
                    resources=row.resources,
                    replicas=1,
                    follows="staging",
                    owner=row.owner,
                    group=row.group,
                    model_version_id=staging.id,
                    image_id=row.image_id,
                    pool_id=row.pool_id,
                    canary_of=row.id,
                    planned_args=sized.flags,
                    kv_planned=sized.predicted,
                )
                session.add(companion)
                text = f"canary of {name}: {model.name} v{staging.version} (staging), 1 replica"
                add_events(
                    session,
                    kind=KIND,
                    name=companion.name,
                    actor=actor.name,
                    events=[NewEvent("Created", text), *sized.events],
                )
        if share != before:
            row.canary_share, row.generation, row.updated_at = share, row.generation + 1, utcnow()
            session.add(row)
            text = f"canary share {before}% → {share}%" + (f" ({canary_name(name)})" if share else "")
            add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("Canary", text)])
        session.commit()
        return public_of(session, row)
