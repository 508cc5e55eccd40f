"""Deployments: desired state written by users, observed state written by the controller.

Users create, scale and delete; every change bumps ``generation`` and is admitted against the pool under the
pool's lock. The controller reads ``desired_state`` and writes back with ``record_observed``; the gateway reads
``ready_routes``. Deleting marks the row; the controller removes it once the backend has stopped every replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from studio import access, runtime_flags
from studio.backends.base import WorkloadSpec
from studio.db import Database, utcnow
from studio.errors import Conflict, InvalidSpec, NotFound, QuotaExceeded, Stale
from studio.models import (
    Deployment,
    DeploymentBase,
    DeploymentCreate,
    DeploymentPublic,
    Image,
    Model,
    ModelVersion,
    Observed,
    Pool,
)
from studio.pools import Admission, Claim, admit
from studio.runtimes import is_embedding_architecture
from studio.services import owned, plans
from studio.services.events import NewEvent, add_events
from studio.services.images import find_image
from studio.services.models import alias_version, find_version
from studio.services.pools import claims_in, find_pool, lock_pool
from studio.values import Autoscale, BuildStatus, Principal, Resources, Route, RuntimeKind, SourceKind, Status

KIND = "deployment"
ADAPTER_RUNTIMES = (RuntimeKind.VLLM,)  # runtimes that serve a LoRA adapter on its base (vLLM's --enable-lora)


@dataclass(frozen=True)
class Desired:
    """One deployment as the controller sees it: what it should run (``spec``, everything resolved), what the
    controller last saw of it (``observed``), and the build of its image where that is built from a Dockerfile."""

    spec: WorkloadSpec
    generation: int
    deleting: bool
    cluster: str
    observed: Observed
    image_build: BuildStatus = BuildStatus.NONE
    image_build_message: str = ""
    # scale to zero: the newest of its last request, last wake request and last change of desired state; and
    # whether the gateway asked to wake it since that change (a deployment put to sleep is changed at that moment)
    last_active: datetime | None = None
    wake_wanted: bool = False
    wake_refused: str = ""
    # the autoscaler's scale-down window as last kept: (when, recommended replicas), highest first
    scale_window: tuple[tuple[datetime, int], ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name


def public_of(session: Session, d: Deployment) -> DeploymentPublic:
    version = session.get(ModelVersion, d.model_version_id)
    model = session.get(Model, version.model_id) if version else None
    image = session.get(Image, d.image_id)
    pool = session.get(Pool, d.pool_id)
    if not (version and model and image and pool):  # foreign keys make this impossible
        raise NotFound(f"deployment {d.name!r} refers to a row that is gone")
    return _described(d, version, model, image, pool)


def _described(d: Deployment, version: ModelVersion, model: Model, image: Image, pool: Pool) -> DeploymentPublic:
    return DeploymentPublic.model_validate(
        d,
        update={
            "model": model.name,
            "model_version": version.version,
            "image": image.name,
            "image_version": image.version,
            "runtime": image.runtime,
            "pool": pool.name,
            "cluster": pool.cluster,
        },
    )


def find_row(session: Session, name: str, actor: Principal | None = None) -> Deployment:
    """The row named ``name``; checked against ``actor`` when given (None: Cove itself, the controller)."""
    row = session.exec(select(Deployment).where(Deployment.name == name)).first()
    if row is None:
        raise NotFound(f"no deployment named {name!r}", hint="see `cove deploy list`")
    if actor is not None:
        owned.check(actor, row, kind=KIND)
    return row


def admit_claim(session: Session, pool: Pool, *, name: str, resources: Resources, replicas: int) -> None:
    lock_pool(session, pool)
    held = claims_in(session, pool_id=pool.id or 0, exclude=name)
    verdict = admit(pool, held, Claim(owner=name, resources=resources, replicas=replicas))
    if not verdict.fits:
        raise QuotaExceeded(verdict.reason, hint=f"free in pool {pool.name!r}: {verdict.free.describe()}")


def preview_admission(
    *, db: Database, pool: str, resources: Resources, replicas: int, name: str | None = None
) -> Admission:
    """Would ``replicas`` × ``resources`` fit in ``pool`` now (``name``'s own claim aside)? Read-only, for forms
    that disable what does not fit; ``create_deployment`` decides again under the pool's lock."""
    with db.session() as session:
        row = find_pool(session, name=pool)
        held = claims_in(session, pool_id=row.id or 0, exclude=name)
        return admit(row, held, Claim(owner=name or "this deployment", resources=resources, replicas=replicas))


def _default_image(pool: Pool) -> str:
    return RuntimeKind.VLLM if pool.gpu_count else RuntimeKind.TRANSFORMERS


def create_deployment(*, db: Database, actor: Principal, data: DeploymentCreate) -> DeploymentPublic:
    """Admit and record a new deployment, owned by ``actor``; the controller starts it. The pool must be open to
    one of the actor's groups. Exactly one of two concurrent creates of the same name wins; the other gets
    Conflict."""
    access.check_group(actor, data.group)
    replicas = data.autoscale.min_replicas if data.autoscale else data.replicas
    with db.session() as session:
        if session.exec(select(Deployment.id).where(Deployment.name == data.name)).first() is not None:
            raise Conflict(f"deployment {data.name!r} exists", hint="pick another name, or scale the existing one")
        if data.follows is not None:
            version = alias_version(session, model=data.model, alias=data.follows)
        else:
            version = find_version(session, model=data.model, version=data.model_version)
        pool = find_pool(session, name=data.pool)
        access.check_pool(actor, pool=pool.name, groups=pool.groups)
        if data.cluster is not None and data.cluster != pool.cluster:
            raise InvalidSpec(
                f"pool {pool.name!r} is on cluster {pool.cluster!r}, not {data.cluster!r}",
                hint=f"choose a pool of cluster {data.cluster!r} (see `cove pool list`)",
            )
        image = find_image(session, name=data.image or _default_image(pool), version=data.image_version)
        # stored as written (a spec applied again finds no change); sized as the runtime will read them
        args = runtime_flags.checked_args(
            image.runtime,
            data.runtime_args,
            local_command=image.local_command,
            may_trust_remote_code=actor.is_admin,
            embeds=is_embedding_architecture(version.architecture),
        )
        if version.adapter_of_id is not None and image.runtime not in ADAPTER_RUNTIMES:
            raise InvalidSpec(
                f"{data.model} v{version.version} is a LoRA adapter, and the {image.runtime.value} runtime cannot "
                "serve adapters",
                hint="deploy it with the vllm image (on a GPU pool), or fine-tune with serving: merged for any runtime",
            )
        # sized before the pool's lock is taken: it reads the model's config.json
        sized = plans.size_deployment(
            session, version=version, runtime=image.runtime, pool=pool, resources=data.resources,
            args=list(args),
        )  # fmt: skip
        admit_claim(session, pool, name=data.name, resources=data.resources, replicas=replicas)
        assert version.id is not None and image.id is not None and pool.id is not None  # noqa: PT018
        described = {k: v for k, v in data if k in DeploymentBase.model_fields}
        row = Deployment(
            **described | {"replicas": replicas},
            owner=actor.name,
            model_version_id=version.id,
            image_id=image.id,
            pool_id=pool.id,
            planned_args=sized.flags,
            kv_planned=sized.predicted,
        )
        session.add(row)
        add_events(
            session,
            kind=KIND,
            name=data.name,
            actor=actor.name,
            events=[
                NewEvent(
                    "Created",
                    f"{data.model} v{version.version}{f' (following {data.follows})' if data.follows else ''} "
                    f"on {image.name}:{image.version} in pool {pool.name} "
                    f"(cluster {pool.cluster}), "
                    f"{replicas} replica{'s' if replicas != 1 else ''}",
                ),
                *sized.events,
            ],
        )
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"deployment {data.name!r} exists", hint="pick another name") from exc
        return public_of(session, row)


@dataclass(frozen=True)
class Filters:
    """Which deployments a list shows (None: any)."""

    status: Status | None = None
    model: str | None = None
    pool: str | None = None
    owner: str | None = None
    group: str | None = None


_SHOWN = [c for c in sa.inspect(Deployment).columns if c.key in DeploymentPublic.model_fields]


def _listing(actor: Principal, filters: Filters) -> sa.Select[Any]:
    """The deployments ``actor`` may see that match ``filters``, as the columns of ``DeploymentPublic`` (plain
    columns, not ORM objects: 1,000 rows read in about a third of the time)."""
    query = (
        sa.select(
            *_SHOWN,
            col(Model.name).label("model"),
            col(ModelVersion.version).label("model_version"),
            col(Image.name).label("image"),
            col(Image.version).label("image_version"),
            col(Image.runtime).label("runtime"),
            col(Pool.name).label("pool"),
            col(Pool.cluster).label("cluster"),
        )
        .join(ModelVersion, col(Deployment.model_version_id) == ModelVersion.id)
        .join(Model, col(ModelVersion.model_id) == Model.id)
        .join(Image, col(Deployment.image_id) == Image.id)
        .join(Pool, col(Deployment.pool_id) == Pool.id)
        .where(owned.visible(Deployment, actor))
    )
    for column, wanted in (
        (Deployment.status, filters.status),
        (Model.name, filters.model),
        (Pool.name, filters.pool),
        (Deployment.owner, filters.owner),
        (Deployment.group, filters.group),
    ):
        if wanted is not None:
            query = query.where(col(column) == wanted)
    return query


def list_deployments(
    *, db: Database, actor: Principal, filters: Filters = Filters(), offset: int = 0, limit: int | None = None
) -> list[DeploymentPublic]:
    """The deployments ``actor`` may see (matching ``filters``), by name, from ``offset``, at most ``limit``: one
    query, whatever their number (pages list thousands every few seconds)."""
    query = _listing(actor, filters).order_by(col(Deployment.name)).offset(offset).limit(limit)
    with db.session() as session:
        return [DeploymentPublic.model_validate(dict(row)) for row in session.execute(query).mappings()]


def count_deployments(*, db: Database, actor: Principal, filters: Filters = Filters()) -> int:
    with db.session() as session:
        return int(
            session.execute(sa.select(func.count()).select_from(_listing(actor, filters).subquery())).scalar_one()
        )


def count_by_status(*, db: Database, actor: Principal) -> dict[str, int]:
    """How many of the deployments ``actor`` may see are in each status (statuses with none are absent)."""
    with db.session() as session:
        rows = session.exec(
            select(Deployment.status, func.count())
            .where(owned.visible(Deployment, actor))
            .group_by(col(Deployment.status))
        ).all()
        return {status: count for status, count in rows}


def get_deployment(*, db: Database, actor: Principal, name: str) -> DeploymentPublic:
    with db.session() as session:
        return public_of(session, find_row(session, name, actor))


def _check_generation(session: Session, row: Deployment, generation: int | None) -> None:
    """Stale unless ``generation`` (what the caller read; None: not checked) is the row's current one. The check is
    a conditional no-op write, so it also takes the row's write lock: of two updates that read the same generation,
    the second waits for the first and is then refused."""
    if generation is None:
        return
    held = session.execute(
        sa.update(Deployment)
        .where(col(Deployment.id) == row.id, col(Deployment.generation) == generation)
        .values(generation=generation)
    )
    if held.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(row)
        raise Stale(
            f"deployment {row.name!r} changed since it was read: its generation is {row.generation}, not {generation}",
            generation=row.generation,
        )


def scale_deployment(
    *, db: Database, actor: Principal, name: str, replicas: int, generation: int | None = None
) -> DeploymentPublic:
    """Set the replica count (0 stops the deployment, keeping it). Admitted against the pool. With
    ``generation``, only if the deployment is still at that generation (Stale otherwise)."""
    return _scale(db=db, actor=actor, name=name, replicas=replicas, generation=generation)


def autoscale_to(*, db: Database, name: str, replicas: int, reason: str) -> DeploymentPublic:
    """The controller's autoscaler sets the count within the deployment's bounds (admitted like any other)."""
    return _scale(db=db, actor=None, name=name, replicas=replicas, reason=reason)


def _scale(
    *,
    db: Database,
    actor: Principal | None,
    name: str,
    replicas: int,
    reason: str = "",
    generation: int | None = None,
) -> DeploymentPublic:
    if replicas < 0:
        raise InvalidSpec(f"replicas must be 0 or more, not {replicas}", hint="0 stops the deployment")
    with db.session() as session:
        row = find_row(session, name, actor)
        _check_generation(session, row, generation)
        if row.deleting:
            raise Conflict(f"deployment {name!r} is being deleted", hint="create it again once it is gone")
        if row.autoscale is not None and actor is not None:
            raise InvalidSpec(
                f"deployment {name!r} autoscales between {row.autoscale.min_replicas} and {row.autoscale.max_replicas}",
                hint="change the bounds with `cove deploy autoscale`, or turn autoscaling off",
            )
        if replicas == row.replicas:
            return public_of(session, row)
        pool = session.get(Pool, row.pool_id)
        assert pool is not None
        if replicas > row.replicas:
            admit_claim(session, pool, name=name, resources=row.resources, replicas=replicas)
            row.wake_refused = ""
        before = row.replicas
        row.replicas, row.generation, row.updated_at = replicas, row.generation + 1, utcnow()
        session.add(row)
        add_events(
            session,
            kind=KIND,
            name=name,
            actor=actor.name if actor else None,
            events=[NewEvent("Scaled", f"replicas {before} → {replicas}{': ' + reason if reason else ''}")],
        )
        session.commit()
        return public_of(session, row)


def set_autoscale(
    *, db: Database, actor: Principal, name: str, autoscale: Autoscale | None, generation: int | None = None
) -> DeploymentPublic:
    with db.session() as session:
        row = find_row(session, name, actor)
        _check_generation(session, row, generation)
        if autoscale is None:
            text = "autoscaling off"
        else:
            clamped = min(max(row.replicas, autoscale.min_replicas), autoscale.max_replicas)
            if clamped > row.replicas:
                pool = session.get(Pool, row.pool_id)
                assert pool is not None
                admit_claim(session, pool, name=name, resources=row.resources, replicas=clamped)
            row.replicas = clamped
            text = (
                f"autoscaling {autoscale.min_replicas}–{autoscale.max_replicas} replicas at "
                f"{autoscale.target_inflight:g} requests in flight each"
            )
        row.autoscale = autoscale
        row.generation += 1
        row.updated_at = utcnow()
        session.add(row)
        add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("Autoscale", text)])
        session.commit()
        return public_of(session, row)


def set_caps(
    *,
    db: Database,
    actor: Principal,
    name: str,
    max_tokens_cap: int | None,
    n_cap: int | None,
    generation: int | None = None,
) -> DeploymentPublic:
    """Set the most a request may ask of ``name`` (None: the studio's default). Whoever may change the deployment
    may; the gateways apply it from their next refresh. Replicas are not touched."""
    with db.session() as session:
        row = find_row(session, name, actor)
        _check_generation(session, row, generation)
        row.max_tokens_cap, row.n_cap = max_tokens_cap, n_cap
        row.generation += 1
        row.updated_at = utcnow()
        session.add(row)
        shown = f"max_tokens ≤ {max_tokens_cap or 'default'}, n ≤ {n_cap or 'default'}"
        add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("Caps", shown)])
        session.commit()
        return public_of(session, row)


def delete_deployment(*, db: Database, actor: Principal, name: str) -> DeploymentPublic:
    """Mark for deletion; the controller stops the replicas and then removes the row."""
    with db.session() as session:
        row = find_row(session, name, actor)
        if not row.deleting:
            companions = session.exec(select(Deployment).where(Deployment.canary_of == row.id)).all()
            for each in [row, *companions]:  # a canary goes with the deployment it is the canary of
                mark_deleting(session, each, actor=actor.name)
            session.commit()
        return public_of(session, row)


def mark_deleting(session: Session, row: Deployment, *, actor: str | None, text: str = "stopping its replicas") -> None:
    """Mark ``row`` for deletion inside the caller's transaction; the controller stops it and removes the row."""
    row.deleting, row.generation, row.updated_at = True, row.generation + 1, utcnow()
    row.status, row.status_at = Status.DELETING, utcnow()
    session.add(row)
    add_events(session, kind=KIND, name=row.name, actor=actor, events=[NewEvent("Deleting", text)])


# ------------------------------------------------------------------------------------------------ controller side


def _model_to_load(version: ModelVersion) -> str:
    """What a runtime loads: a Hub repo id (resolved in the model cache) or the version's folder."""
    return version.source if version.source_kind == SourceKind.HF else version.path


def _adapter_rank(version: ModelVersion) -> int:
    """The LoRA rank an adapter version was trained with (its lineage's settings), for the runtime's limit."""
    settings = (version.lineage or {}).get("settings") or {}
    return int(settings.get("rank") or 0)


def desired_state(*, db: Database) -> list[Desired]:
    """Every deployment as the controller reconciles it, oldest first: one query, whatever their number."""
    with db.session() as session:
        rows = session.exec(
            select(Deployment, ModelVersion, Image, Pool)
            .join(ModelVersion, col(Deployment.model_version_id) == ModelVersion.id)
            .join(Image, col(Deployment.image_id) == Image.id)
            .join(Pool, col(Deployment.pool_id) == Pool.id)
            .order_by(col(Deployment.id))
        ).all()
        adapted = {v.adapter_of_id for _, v, _, _ in rows if v.adapter_of_id is not None}
        bases = (
            {b.id: b for b in session.exec(select(ModelVersion).where(col(ModelVersion.id).in_(adapted)))}
            if adapted
            else {}
        )
        return [
            Desired(
                spec=WorkloadSpec(
                    name=d.name,
                    runtime=image.runtime,
                    model=_model_to_load(loaded := bases.get(version.adapter_of_id or 0) or version),
                    model_revision=loaded.revision,
                    model_path=loaded.path,
                    adapter=version.path if version.adapter_of_id is not None else "",
                    adapter_rank=_adapter_rank(version) if version.adapter_of_id is not None else 0,
                    embeds=is_embedding_architecture(loaded.architecture),
                    image=f"{image.ref}:{image.version}",
                    health_path=image.health_path,
                    local_command=tuple(image.local_command) if image.local_command else None,
                    args=(*d.runtime_args, *d.planned_args),  # the user's flags, then the plan's they left out
                    resources=d.resources,
                    replicas=d.replicas,
                    pool=pool.name,
                    node_selector=tuple(sorted(pool.node_selector.items())),
                    tolerations=tuple(dict(t) for t in pool.tolerations),
                    autoscale=d.autoscale,
                ),
                generation=d.generation,
                deleting=d.deleting,
                cluster=pool.cluster,
                observed=Observed.model_validate(d),
                image_build=image.build_status,
                image_build_message=image.build_message,
                last_active=max(t for t in (d.last_request_at, d.wake_requested_at, d.updated_at) if t is not None),
                wake_wanted=d.wake_requested_at is not None and d.wake_requested_at > d.updated_at,
                wake_refused=d.wake_refused,
                scale_window=_window(d.scale_window),
            )
            for d, version, image, pool in rows
        ]


def _window(stored: list[list[Any]]) -> tuple[tuple[datetime, int], ...]:
    """The kept window, skipping entries a hand edit left unreadable (the window only delays a scale-down)."""
    window = []
    for entry in stored:
        try:
            window.append((datetime.fromisoformat(entry[0]), int(entry[1])))
        except (ValueError, TypeError, IndexError):
            continue
    return tuple(window)


def keep_scale_window(*, db: Database, name: str, window: Sequence[tuple[datetime, int]]) -> None:
    """The autoscaler's recent recommendations (controller only), read back by a restarted controller."""
    stored = [[at.isoformat(), replicas] for at, replicas in window]
    with db.session() as session:
        session.execute(sa.update(Deployment).where(col(Deployment.name) == name).values(scale_window=stored))
        session.commit()


def record_observed(*, db: Database, name: str, generation: int, observed: Observed, events: list[NewEvent]) -> None:
    """Write what the controller observed (and its events) in one transaction."""
    with db.session() as session:
        row = session.exec(select(Deployment).where(Deployment.name == name)).first()
        if row is None:
            return
        if row.status != observed.status:
            row.status_at = utcnow()
        row.sqlmodel_update(observed.model_dump())
        row.observed_generation = generation
        session.add(row)
        add_events(session, kind=KIND, name=name, events=events)
        session.commit()


def finish_delete(*, db: Database, name: str) -> None:
    with db.session() as session:
        row = session.exec(select(Deployment).where(Deployment.name == name)).first()
        if row is not None and row.deleting:
            session.delete(row)
            add_events(session, kind=KIND, name=name, events=[NewEvent("Deleted", "all replicas stopped")])
            session.commit()


def _routes(session: Session, *where: Any) -> list[Route]:
    """The routes the gateway may use: ready, not being deleted, with endpoints, their runtime and model folder. A
    canary deployment is no route of its own: it rides on the route of the deployment it is the canary of, with that
    one's share."""
    ready = (col(Deployment.status) == Status.READY, col(Deployment.deleting).is_(False))

    def read(*where: Any) -> list[tuple[Deployment, int, str, str, str]]:
        return session.execute(  # type: ignore[return-value]
            sa.select(
                Deployment,
                col(ModelVersion.version),
                col(ModelVersion.path),
                col(Image.runtime),
                col(ModelVersion.architecture),
            )
            .join(ModelVersion, col(Deployment.model_version_id) == ModelVersion.id)
            .join(Image, col(Deployment.image_id) == Image.id)
            .where(*ready, *where)
        ).all()

    rows = read(col(Deployment.canary_of).is_(None), *where)
    shared = [d.id for d, *_ in rows if d.canary_share > 0 and d.endpoints]
    canaries = (
        {
            c.canary_of: Route(
                c.name,
                c.upstream_model,
                tuple(c.endpoints),
                runtime=RuntimeKind(runtime),
                model_path=path,
                model_version=version,
                deployment=c.name,
                embeds=is_embedding_architecture(architecture),
            )
            for c, version, path, runtime, architecture in read(col(Deployment.canary_of).in_(shared))
            if c.endpoints
        }
        if shared
        else {}
    )
    return [
        Route(
            d.name,
            d.upstream_model,
            tuple(d.endpoints),
            int(d.created_at.timestamp()),
            RuntimeKind(runtime),
            path,
            model_version=version,
            canary=canaries.get(d.id),
            canary_share=d.canary_share if d.id in canaries else 0,
            embeds=is_embedding_architecture(architecture),
            max_tokens_cap=d.max_tokens_cap,
            n_cap=d.n_cap,
        )
        for d, version, path, runtime, architecture in rows
        if d.endpoints
    ]


def ready_routes(*, db: Database) -> list[Route]:
    """Deployments with ready replicas, for the gateway."""
    with db.session() as session:
        return _routes(session)


def find_route(*, db: Database, name: str) -> tuple[bool, Route | None]:
    """Whether deployment ``name`` exists (for the gateway: a canary does not), and its route if it has ready
    replicas."""
    with db.session() as session:
        found = _routes(session, Deployment.name == name)
        if found:
            return True, found[0]
        # a canary is reached only through the deployment it is the canary of: by its own name it does not exist
        exists = select(Deployment.id).where(Deployment.name == name, col(Deployment.canary_of).is_(None))
        return session.exec(exists).first() is not None, None


def deployment_names(*, db: Database, actor: Principal) -> list[str]:
    with db.session() as session:
        query = select(Deployment.name).where(owned.visible(Deployment, actor))
        return list(session.exec(query.order_by(col(Deployment.name))).all())


# ------------------------------------------------------------------------------------------------ scale to zero


@dataclass(frozen=True)
class WakeView:
    """A deployment as the gateway sees it while holding requests for it: whether it can sleep (autoscaled with a
    minimum of 0), its replica count and status, why the pool refused to wake it (empty: not refused), and its
    route once a replica is ready."""

    sleeps: bool
    replicas: int
    status: Status
    message: str
    wake_refused: str
    route: Route | None


def wake_view(*, db: Database, name: str) -> WakeView | None:
    """None when no deployment of that name exists (or it is a canary, reached only through its main one)."""
    with db.session() as session:
        row = session.exec(
            select(Deployment).where(Deployment.name == name, col(Deployment.canary_of).is_(None))
        ).first()
        if row is None:
            return None
        found = _routes(session, Deployment.name == name)
        return WakeView(
            sleeps=row.autoscale is not None and row.autoscale.min_replicas == 0 and not row.deleting,
            replicas=row.replicas,
            status=row.status,
            message=row.message,
            wake_refused=row.wake_refused,
            route=found[0] if found else None,
        )


def sleeper_names(*, db: Database) -> frozenset[str]:
    """The deployments that scale to zero (autoscaled with a minimum of 0): the gateway holds requests for these
    while they have no ready replica, instead of refusing them."""
    with db.session() as session:
        rows = session.exec(
            select(Deployment).where(col(Deployment.autoscale).is_not(None), col(Deployment.deleting).is_(False))
        ).all()
        return frozenset(d.name for d in rows if d.autoscale is not None and d.autoscale.min_replicas == 0)


def request_wake(*, db: Database, name: str, at: datetime) -> None:
    """The gateway holds a request for ``name``: the controller wakes it on its next pass (a refusal is cleared, so
    the pool is asked again)."""
    with db.session() as session:
        session.execute(
            sa.update(Deployment).where(col(Deployment.name) == name).values(wake_requested_at=at, wake_refused="")
        )
        session.commit()


def refuse_wake(*, db: Database, name: str, reason: str) -> None:
    """The controller could not wake ``name`` (the pool has no room): the gateway answers its held requests so."""
    with db.session() as session:
        session.execute(sa.update(Deployment).where(col(Deployment.name) == name).values(wake_refused=reason))
        session.commit()


def record_requests(*, db: Database, seen: dict[str, datetime]) -> None:
    """When each deployment was last asked for (the gateway's batched flush; only ever moves forward)."""
    with db.session() as session:
        for name, at in seen.items():
            session.execute(
                sa.update(Deployment)
                .where(
                    col(Deployment.name) == name,
                    sa.or_(col(Deployment.last_request_at).is_(None), col(Deployment.last_request_at) < at),
                )
                .values(last_request_at=at)
            )
        session.commit()


def record_cold_start(*, db: Database, name: str, seconds: float) -> None:
    """How long the last wake took, from the first held request to its first token."""
    with db.session() as session:
        session.execute(sa.update(Deployment).where(col(Deployment.name) == name).values(cold_start_s=seconds))
        session.commit()
