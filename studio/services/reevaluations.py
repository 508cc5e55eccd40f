"""Scheduled re-evaluation of each model's production version, and the mark it leaves when production fails.

A model whose gate names an evaluation set and ``every_h`` is watched. ``schedule`` creates, as the model's owner
and served by a deployment of the production version, an evaluation on that set when none is unfinished and the
newest was created ``every_h`` ago or more (or there is none): the database is the schedule, so a restarted
control plane neither forgets one nor starts one twice. ``judge_production`` holds production's newest succeeded
evaluation on the set to the gate's minimums (``studio.gate.watch``): a failure marks the model (``gate_failing``,
with the failing checks and since when), records a ``GateFailing`` event and returns an ``Alert`` for the webhook;
a later pass clears the mark (``GatePassing``). Each evaluation is judged once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from studio.db import Database
from studio.errors import CoveError
from studio.gate import watch
from studio.models import Evaluation, EvaluationCreate, GateFailing, Model, ModelVersion
from studio.services import evaluations, quality, users
from studio.services.events import NewEvent, add_events, record_events
from studio.services.models import KIND, alias_versions


@dataclass(frozen=True)
class Alert:
    """Production of ``model`` failed its re-evaluation: what the webhook is told. ``webhook``: the model's own
    URL (None: the settings' default)."""

    model: str
    version: int
    evaluation: int
    checks: list[dict[str, object]]
    since: datetime
    webhook: str | None


@dataclass(frozen=True)
class Scheduled:
    """What ``schedule`` did for one model: started a re-evaluation, or could not (``text`` says why)."""

    model: str
    started: bool
    text: str


def _watched(session: Session) -> list[tuple[Model, ModelVersion]]:
    """The models with a re-evaluation schedule and a production version, with that version."""
    production = {m: a["production"] for m, a in alias_versions(session).items() if "production" in a}
    found = []
    for row in session.exec(select(Model).order_by(col(Model.id))):
        if row.gate.evaluation is None or row.gate.every_h is None or row.id not in production:
            continue
        version = session.exec(
            select(ModelVersion).where(ModelVersion.model_id == row.id, ModelVersion.version == production[row.id])
        ).first()
        if version is not None:
            found.append((row, version))
    return found


def _newest(session: Session, model: Model, version: ModelVersion) -> Evaluation | None:
    """The newest evaluation of ``version`` on ``model``'s evaluation set, whatever its status."""
    evalset = model.gate.evaluation
    assert evalset is not None  # _watched
    return session.exec(
        select(Evaluation)
        .options(defer(Evaluation.examples))  # type: ignore[arg-type]
        .where(
            Evaluation.model_version_id == version.id,
            Evaluation.dataset_version_id == quality.dataset_version_id(session, evalset),
            Evaluation.split == evalset.split,
        )
        .order_by(col(Evaluation.id).desc())
    ).first()


def schedule(*, db: Database, now: datetime) -> list[Scheduled]:
    """Create the re-evaluations that are due at ``now``: what was started, or why one could not be."""
    due: list[tuple[str, str, EvaluationCreate | None, str]] = []
    with db.session() as session:
        for model, version in _watched(session):
            newest = _newest(session, model, version)
            every = timedelta(hours=model.gate.every_h or 0)
            if newest is not None and (not newest.status.finished or newest.created_at + every > now):
                continue
            dep = quality.serving(session, version)
            if dep is None:
                due.append((model.name, model.owner, None, f"no deployment serves v{version.version}"))
                continue
            due.append((model.name, model.owner, quality.request(model, version, dep.name), ""))
    said = []
    for name, owner, data, why in due:
        if data is None:
            said.append(Scheduled(name, False, f"cannot re-evaluate production: {why}"))
            continue
        try:
            created = evaluations.create_evaluation(db=db, actor=users.principal(db=db, name=owner), data=data)
        except CoveError as exc:
            said.append(Scheduled(name, False, f"cannot re-evaluate production: {exc.message}"))
            continue
        text = f"evaluation {created.id} of production v{created.model_version} on {data.deployment}"
        record_events(db=db, kind=KIND, name=name, events=[NewEvent("Reevaluating", text)])
        said.append(Scheduled(name, True, f"started {text}"))
    return said


def judge_production(*, db: Database, now: datetime) -> list[Alert]:
    """Hold each watched production version's newest succeeded evaluation to its gate's minimums, once per
    evaluation: mark and alert on a failure, clear the mark on a pass."""
    alerts = []
    with db.session() as session:
        for model, version in _watched(session):
            assert model.gate.evaluation is not None and version.id is not None  # noqa: PT018 (_watched)
            done = quality.evidence(session, model.gate.evaluation, version.id).done
            marked = model.gate_failing
            if done is None or (marked and (marked.version, marked.evaluation) == (version.version, done.id)):
                continue
            verdict = watch(model.gate, quality.results_of(session, model=model, version=version))
            if verdict.passed:
                if marked is not None:
                    model.gate_failing = None
                    text = f"production v{version.version} passes again ({verdict.describe()})"
                    add_events(session, kind=KIND, name=model.name, events=[NewEvent("GatePassing", text)])
                continue
            since = marked.since if marked is not None and marked.version == version.version else now
            checks = [asdict(c) for c in verdict.failing]
            model.gate_failing = GateFailing(
                version=version.version, evaluation=done.id or 0, checks=checks, since=since
            )
            text = f"production v{version.version} fails its gate: {verdict.describe()}"
            add_events(session, kind=KIND, name=model.name, events=[NewEvent("GateFailing", text, "Warning")])
            alerts.append(Alert(model.name, version.version, done.id or 0, checks, since, model.gate.webhook))
        session.commit()
    return alerts
