"""A model's aliases (``production``, ``staging``), the promotion gate, and rollback.

An alias points at one version of its model; each move is a row (``AliasMove``), so the newest says where it points
and the ones before are its history. ``staging`` moves freely for whoever may change the model. ``production`` moves
only through ``promote``, which runs the model's gate (``studio.gate``, pure) on the results it is given: a refusal
raises GateRefused naming every failing check; an admin may override it with a reason, which the audit trail keeps.
``rollback`` moves production back to the version it pointed at before (without the gate: that version passed it to
get there). Deployments that follow a moved alias are pointed at the new version in the same transaction, with a new
generation, so the controller replaces their replicas as for any change of what they run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

from sqlmodel import Session, col, select

from studio import access
from studio.db import Database, utcnow
from studio.errors import GateRefused, InvalidSpec, NotFound
from studio.gate import GateConfig, Results, Verdict, evaluate
from studio.models import AliasMove, AliasMovePublic, Deployment, Model, ModelPublic, ModelVersion, Promotion
from studio.services import benchmarks, owned, quality
from studio.services.events import NewEvent, add_events
from studio.services.models import ALIASES, KIND, find_version, get_model
from studio.values import Principal

PRODUCTION, STAGING = ALIASES


def _model(session: Session, name: str, actor: Principal) -> Model:
    row = session.exec(select(Model).where(Model.name == name)).first()
    if row is None:
        raise NotFound(f"no model named {name!r}", hint="see `cove model list`")
    owned.check(actor, row, kind=KIND)
    return row


def _moves(session: Session, model: Model, alias: str) -> list[AliasMove]:
    return list(
        session.exec(
            select(AliasMove)
            .where(AliasMove.model_id == model.id, AliasMove.alias == alias)
            .order_by(col(AliasMove.id))
        ).all()
    )


def _stack(moves: list[AliasMove]) -> list[int]:
    """The version ids an alias went through, a rollback undoing the move before it: [-1] is where it points now,
    [-2] where a rollback goes."""
    stack: list[int] = []
    for move in moves:
        if move.rollback and stack:
            stack.pop()
        else:
            stack.append(move.version_id)
    return stack


def _move(
    session: Session,
    *,
    model: Model,
    alias: str,
    version: ModelVersion,
    actor: Principal,
    rollback: bool = False,
    override_reason: str | None = None,
) -> list[str]:
    """Record the move and point the deployments that follow ``alias`` at ``version``: their names."""
    assert model.id is not None and version.id is not None  # noqa: PT018
    session.add(
        AliasMove(
            model_id=model.id,
            alias=alias,
            version_id=version.id,
            actor=actor.name,
            rollback=rollback,
            override_reason=override_reason,
        )
    )
    followers = session.exec(
        select(Deployment)
        .join(ModelVersion, col(Deployment.model_version_id) == ModelVersion.id)
        .where(ModelVersion.model_id == model.id, Deployment.follows == alias, col(Deployment.deleting).is_(False))
    ).all()
    rolled = []
    for dep in followers:
        if dep.model_version_id == version.id:
            continue
        dep.model_version_id, dep.generation, dep.updated_at = version.id, dep.generation + 1, utcnow()
        session.add(dep)
        text = f"following {model.name}@{alias}: rolling onto version {version.version}"
        add_events(session, kind="deployment", name=dep.name, actor=actor.name, events=[NewEvent("Rolling", text)])
        rolled.append(dep.name)
    return rolled


def set_alias(*, db: Database, actor: Principal, model: str, alias: str, version: int) -> Promotion:
    """Point ``staging`` at ``version`` (a plain move, for whoever may change the model). ``production`` is only
    moved by ``promote``, which runs the gate."""
    if alias == PRODUCTION:
        return promote(db=db, actor=actor, model=model, version=version)
    if alias != STAGING:
        raise InvalidSpec(f"{alias!r} is not an alias: a model has {' and '.join(ALIASES)}", hint="name one of them")
    with db.session() as session:
        row = _model(session, model, actor)
        target = find_version(session, model=model, version=version)
        stack = _stack(_moves(session, row, STAGING))
        previous = session.get(ModelVersion, stack[-1]) if stack else None
        rolled = _move(session, model=row, alias=STAGING, version=target, actor=actor)
        text = f"staging → version {version}" + (f" (was {previous.version})" if previous else "")
        add_events(session, kind=KIND, name=model, actor=actor.name, events=[NewEvent("AliasMoved", text)])
        session.commit()
        return Promotion(
            model=model,
            alias=STAGING,
            version=version,
            previous=previous.version if previous else None,
            deployments=rolled,
        )


def judge(
    *, db: Database, model: str, version: int, results: Mapping[int, Results] | None = None
) -> tuple[Verdict, int | None]:
    """What the gate says of promoting ``version`` now, and the production version it is compared with (None: none
    yet). ``results`` by version number; a version without any is unmeasured. Scores come from the gate's
    evaluation set when it names one; whether the candidate met the SLO, when not given, from its stored benchmark
    runs."""
    results = benchmarks.with_stored_slo(db=db, model=model, version=version, results=results)
    with db.session() as session:
        row = session.exec(select(Model).where(Model.name == model)).first()
        if row is None:
            raise NotFound(f"no model named {model!r}", hint="see `cove model list`")
        target = find_version(session, model=model, version=version)
        stack = _stack(_moves(session, row, PRODUCTION))
        current = session.get(ModelVersion, stack[-1]) if stack else None
        gate = row.gate
        results = quality.gate_results(session, model=row, versions=[v for v in (target, current) if v], given=results)
    production = results.get(current.version, Results()) if current else None
    return evaluate(gate, results.get(version, Results()), production), current.version if current else None


def promote(
    *,
    db: Database,
    model: str,
    version: int,
    actor: Principal,
    to: str = PRODUCTION,
    override_reason: str | None = None,
    results: Mapping[int, Results] | None = None,
) -> Promotion:
    """Move ``to`` (production, unless told) onto ``version``. For production the model's gate judges ``results``
    (by version number: the candidate's and the current production's); a refusal raises GateRefused naming each
    failing check with its numbers, unless an admin gives ``override_reason`` (a member's override is Forbidden).
    Following deployments are rolled onto the version."""
    if to != PRODUCTION:
        return set_alias(db=db, actor=actor, model=model, alias=to, version=version)
    reason = (override_reason or "").strip() or None
    if override_reason is not None and reason is None:
        raise InvalidSpec("an override needs a reason", hint="say why the gate is overridden: the audit trail keeps it")
    verdict, current = judge(db=db, model=model, version=version, results=results)
    overridden = not verdict.passed
    if overridden:
        if reason is None:
            unmeasured = [version] if current is None else [version, current]
            started = quality.start_missing(db=db, actor=actor, model=model, versions=unmeasured)
            raise GateRefused(
                f"the gate refuses {model} v{version} for production: {verdict.describe()}"
                + "".join(f"; {s}" for s in started),
                fields=[{"path": c.name, "message": c.detail} for c in verdict.failing],
            )
        access.check_admin(actor, doing="override the promotion gate")
    with db.session() as session:
        row = _model(session, model, actor)
        target = find_version(session, model=model, version=version)
        rolled = _move(
            session,
            model=row,
            alias=PRODUCTION,
            version=target,
            actor=actor,
            override_reason=reason if overridden else None,
        )
        was = f" (was {current})" if current is not None else ""
        if overridden:
            event = NewEvent(
                "GateOverridden",
                f"production → version {version}{was} past the gate ({verdict.describe()}): {reason}",
                "Warning",
            )
        else:
            event = NewEvent("Promoted", f"production → version {version}{was}; gate: {verdict.describe()}")
        add_events(session, kind=KIND, name=model, actor=actor.name, events=[event])
        session.commit()
    return Promotion(
        model=model,
        alias=PRODUCTION,
        version=version,
        previous=current,
        checks=[asdict(c) for c in verdict.checks],
        overridden=overridden,
        deployments=rolled,
    )


def rollback(*, db: Database, actor: Principal, model: str) -> Promotion:
    """Move production back to the version it pointed at before the current one (the gate is not asked again:
    that version passed it to get there). NotFound when there is nothing to go back to."""
    with db.session() as session:
        row = _model(session, model, actor)
        stack = _stack(_moves(session, row, PRODUCTION))
        if len(stack) < 2:
            raise NotFound(
                f"model {model!r} has no earlier production version to roll back to",
                hint="see its history with `cove model aliases " + model + "`",
            )
        current, target = session.get(ModelVersion, stack[-1]), session.get(ModelVersion, stack[-2])
        assert current is not None and target is not None  # noqa: PT018 (the moves' foreign keys)
        rolled = _move(session, model=row, alias=PRODUCTION, version=target, actor=actor, rollback=True)
        text = f"production → version {target.version} (rolled back from {current.version})"
        add_events(session, kind=KIND, name=model, actor=actor.name, events=[NewEvent("RolledBack", text)])
        session.commit()
        return Promotion(
            model=model, alias=PRODUCTION, version=target.version, previous=current.version, deployments=rolled
        )


def set_gate(*, db: Database, actor: Principal, model: str, gate: GateConfig) -> ModelPublic:
    """Store what a version must show to become ``model``'s production version (an empty gate: promotes freely)."""
    with db.session() as session:
        row = _model(session, model, actor)
        row.gate = gate
        session.add(row)
        add_events(session, kind=KIND, name=model, actor=actor.name, events=[NewEvent("GateSet", gate.describe())])
        session.commit()
    return get_model(db=db, name=model)


def history(*, db: Database, model: str) -> list[AliasMovePublic]:
    """Every move of ``model``'s aliases, newest first."""
    with db.session() as session:
        row = session.exec(select(Model).where(Model.name == model)).first()
        if row is None:
            raise NotFound(f"no model named {model!r}", hint="see `cove model list`")
        rows = session.exec(
            select(AliasMove, ModelVersion.version)
            .join(ModelVersion, col(AliasMove.version_id) == ModelVersion.id)
            .where(AliasMove.model_id == row.id)
            .order_by(col(AliasMove.id).desc())
        ).all()
        return [
            AliasMovePublic(
                alias=m.alias,
                version=v,
                actor=m.actor,
                rollback=m.rollback,
                override_reason=m.override_reason,
                created_at=m.created_at,
            )
            for m, v in rows
        ]
