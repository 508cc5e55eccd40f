"""Evaluations: a model version, served by a deployment, scored on a dataset version's split; how the controller
runs them; and the scores the promotion gate reads.

A user creates one (``create_evaluation``): the model version, dataset version, split, deployments and scorers are
checked up front (a regex that does not compile, a schema that is not valid, a deployment that serves another
version are refused), and a Queued row is written — nothing runs in the call. The controller
(``studio.evaluation_runs``) starts each queued one as a task (``python -m studio.evaluator PLAN``) with a gateway
key of the owner's, limited to the deployments it asks and revoked when it ends; it records the run's progress and,
at the end, its result (``finish``): the per-scorer aggregates and every example. Because the server starts runs
itself, a scheduled re-evaluation is one more caller of ``create_evaluation``.

The examples are a JSON column that lists leave unread (``defer``): a few thousand examples of each of many
evaluations cost nothing to list, and the database stays the one store every face reads results from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from studio import access
from studio.db import Database, utcnow
from studio.errors import Conflict, InvalidSpec, NotFound
from studio.models import (
    Dataset,
    DatasetVersion,
    Deployment,
    Evaluation,
    EvaluationCreate,
    EvaluationPublic,
    FineTune,
    Model,
    ModelVersion,
)
from studio.scoring import EvalResult, Progress, ScorerKind, ScorerSpec, scorer_of
from studio.services import datasets, owned
from studio.services.events import NewEvent, add_events
from studio.services.models import find_version
from studio.values import JobStatus, Principal

KIND = "evaluation"
HELD_OUT = "held_out"  # the split a fine-tune held out of its training rows


def _check(actor: Principal, row: Evaluation) -> None:
    access.check_owner(actor, kind=KIND, name=str(row.id), owner=row.owner, group=row.group)


def _find(session: Session, evaluation_id: int, actor: Principal | None = None) -> Evaluation:
    row = session.get(Evaluation, evaluation_id)
    if row is None:
        raise NotFound(f"no evaluation {evaluation_id}", hint="see `cove eval list`")
    if actor is not None:
        _check(actor, row)
    return row


def _deployment(session: Session, actor: Principal, name: str, role: str) -> Deployment:
    row = session.exec(select(Deployment).where(Deployment.name == name)).first()
    if row is None:
        raise NotFound(f"no deployment named {name!r} (the {role})", hint="see `cove deploy list`")
    access.check_owner(actor, kind="deployment", name=row.name, owner=row.owner, group=row.group)
    return row


def _checked_scorers(data: EvaluationCreate) -> list[ScorerSpec]:
    """Each scorer's settings checked (InvalidSpec with the pattern's or the schema's error); pairwise needs both
    a judge and a deployment to compare against, and is implied by them."""
    scorers = list(data.scorers)
    for spec in scorers:
        scorer_of(spec)
    pairwise = any(s.kind is ScorerKind.PAIRWISE for s in scorers)
    if (data.judge is None) != (data.against is None):
        raise InvalidSpec(
            "pairwise judgement needs both a judge and a deployment to compare against",
            hint="--judge DEP --against DEP",
        )
    if pairwise and data.judge is None:
        raise InvalidSpec("the pairwise scorer needs a judge", hint="--judge DEP --against DEP")
    if data.judge is not None and not pairwise:
        scorers.append(ScorerSpec(kind=ScorerKind.PAIRWISE))
    return scorers


def _dataset_of(session: Session, actor: Principal, data: EvaluationCreate, version: ModelVersion) -> DatasetVersion:
    """The dataset version to read; for the held-out split, the one the fine-tune that made ``version`` trained on."""
    dataset = datasets.find_version(session, dataset=data.dataset, version=data.dataset_version, actor=actor)
    if data.split == HELD_OUT:
        job = session.exec(select(FineTune).where(FineTune.result_version_id == version.id)).first()
        if job is None:
            raise InvalidSpec(
                f"{data.model} v{version.version} was not made by a fine-tune: it has no held-out rows",
                hint="evaluate on a dataset's eval split: --split eval",
            )
        if job.dataset_version_id != dataset.id:
            trained = session.get(DatasetVersion, job.dataset_version_id)
            raise InvalidSpec(
                f"{data.model} v{version.version} was trained on another dataset version",
                hint=f"give the one it was trained on (dataset version id {trained.id if trained else '?'})",
            )
    elif data.split not in dataset.files:
        raise InvalidSpec(
            f"dataset {data.dataset} v{dataset.version} has no {data.split!r} split",
            hint=f"its splits: {', '.join(dataset.files)}"
            + (f"; or {HELD_OUT} for a fine-tuned version" if data.split == "eval" else ""),
        )
    return dataset


def create_evaluation(*, db: Database, actor: Principal, data: EvaluationCreate) -> EvaluationPublic:
    """Check and record an evaluation, owned by ``actor``; the controller runs it. InvalidSpec for a broken
    scorer, a split the dataset lacks, or a deployment that serves another version than the one evaluated."""
    scorers = _checked_scorers(data)
    with db.session() as session:
        version = find_version(session, model=data.model, version=data.model_version)
        dataset = _dataset_of(session, actor, data, version)
        candidate = _deployment(session, actor, data.deployment, "candidate")
        if candidate.model_version_id != version.id:
            served = session.get(ModelVersion, candidate.model_version_id)
            raise InvalidSpec(
                f"deployment {data.deployment!r} serves {data.model} v{served.version if served else '?'}, "
                f"not v{version.version}",
                hint="deploy the version to evaluate, or name the deployment that serves it",
            )
        for name, role in ((data.judge, "judge"), (data.against, "production version")):
            if name is not None:
                _deployment(session, actor, name, role)
        row = Evaluation(
            **data.model_dump(
                include=set(EvaluationCreate.model_fields)
                - {"model", "model_version", "dataset", "dataset_version", "scorers"}
            ),
            owner=actor.name,
            model_version_id=version.id or 0,
            dataset_version_id=dataset.id or 0,
            scorers=[s.model_dump(exclude_none=True) for s in scorers],
        )
        session.add(row)
        session.flush()
        said = f"{data.model} v{version.version} on {data.dataset} v{dataset.version} ({data.split})"
        add_events(session, kind=KIND, name=str(row.id), actor=actor.name, events=[NewEvent("Created", said)])
        session.commit()
        return _public(session, row)


def _public(session: Session, row: Evaluation, *, examples: bool = False) -> EvaluationPublic:
    version = session.get(ModelVersion, row.model_version_id)
    model = session.get(Model, version.model_id) if version else None
    dataset_version = session.get(DatasetVersion, row.dataset_version_id)
    dataset = session.get(Dataset, dataset_version.dataset_id) if dataset_version else None
    fields = row.model_dump(exclude={"examples"})
    return EvaluationPublic.model_validate(
        fields
        | {
            "model": model.name if model else "?",
            "model_version": version.version if version else 0,
            "dataset": dataset.name if dataset else "?",
            "dataset_version": dataset_version.version if dataset_version else 0,
            "examples": row.examples if examples else [],
        }
    )


def _listed(actor: Principal, model: str | None, version: int | None) -> Any:
    query = select(Evaluation).options(defer(Evaluation.examples))  # type: ignore[arg-type]
    query = query.where(owned.visible(Evaluation, actor))
    if model is not None:
        query = query.join(ModelVersion, col(ModelVersion.id) == Evaluation.model_version_id).join(
            Model, col(Model.id) == ModelVersion.model_id
        )
        query = query.where(Model.name == model)
        if version is not None:
            query = query.where(ModelVersion.version == version)
    return query


def list_evaluations(
    *,
    db: Database,
    actor: Principal,
    model: str | None = None,
    version: int | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[EvaluationPublic]:
    """The evaluations ``actor`` may see (of ``model``, of its ``version``), newest first, without their examples."""
    with db.session() as session:
        query = _listed(actor, model, version).order_by(col(Evaluation.id).desc()).offset(offset).limit(limit)
        return [_public(session, row) for row in session.exec(query)]


def count_evaluations(*, db: Database, actor: Principal, model: str | None = None, version: int | None = None) -> int:
    with db.session() as session:
        query = _listed(actor, model, version).subquery()
        return int(session.exec(sa.select(sa.func.count()).select_from(query)).one()[0])  # type: ignore[call-overload]


def get_evaluation(*, db: Database, actor: Principal, evaluation_id: int) -> EvaluationPublic:
    """One evaluation with every example: prompt, reference, prediction, scores, errors."""
    with db.session() as session:
        return _public(session, _find(session, evaluation_id, actor), examples=True)


def delete_evaluation(*, db: Database, actor: Principal, evaluation_id: int) -> None:
    """Forget an ended evaluation; one that runs is refused (Conflict)."""
    with db.session() as session:
        row = _find(session, evaluation_id, actor)
        if not row.status.finished:
            raise Conflict(f"evaluation {evaluation_id} is {row.status.value.lower()}", hint="delete it when it ends")
        session.delete(row)
        add_events(session, kind=KIND, name=str(evaluation_id), actor=actor.name, events=[NewEvent("Deleted", "")])
        session.commit()


def scores_of(session: Session, version_id: int, dataset_version_id: int | None = None) -> dict[str, float]:
    """The mean score per scorer of the newest succeeded evaluation of a model version (on ``dataset_version_id``
    when given); {} when it has none. For the promotion gate, inside its transaction."""
    query = (
        select(Evaluation)
        .options(defer(Evaluation.examples))  # type: ignore[arg-type]
        .where(Evaluation.model_version_id == version_id, Evaluation.status == JobStatus.SUCCEEDED)
    )
    if dataset_version_id is not None:
        query = query.where(Evaluation.dataset_version_id == dataset_version_id)
    row = session.exec(query.order_by(col(Evaluation.finished_at).desc(), col(Evaluation.id).desc())).first()
    return {name: float(summary["mean"]) for name, summary in row.summary.items()} if row else {}


# ------------------------------------------------------------------------------------------- the controller's


@dataclass(frozen=True)
class Active:
    """One unfinished evaluation as the controller sees it."""

    id: int
    owner: str
    status: JobStatus
    key_name: str
    split: str
    deployment: str
    judge: str | None
    against: str | None
    limit: int | None
    scorers: list[ScorerSpec]
    dataset: DatasetVersion
    held_out: tuple[float, int] | None  # (fraction, seed) of the fine-tune, for the held-out split

    @property
    def task(self) -> str:
        return f"eval-{self.id}"


def active(*, db: Database) -> list[Active]:
    """Every queued or running evaluation, oldest first."""
    with db.session() as session:
        query = (
            select(Evaluation)
            .options(defer(Evaluation.examples))  # type: ignore[arg-type]
            .where(col(Evaluation.status).in_((JobStatus.QUEUED, JobStatus.RUNNING)))
            .order_by(col(Evaluation.id))
        )
        found = []
        for row in session.exec(query):
            dataset = session.get(DatasetVersion, row.dataset_version_id)
            assert dataset is not None  # the foreign key cascades
            held_out = None
            if row.split == HELD_OUT:
                job = session.exec(select(FineTune).where(FineTune.result_version_id == row.model_version_id)).first()
                if job is not None and "eval" not in dataset.files:
                    held_out = (job.settings.eval_fraction, job.settings.seed)
            found.append(
                Active(
                    id=row.id or 0,
                    owner=row.owner,
                    status=row.status,
                    key_name=row.key_name,
                    split=row.split,
                    deployment=row.deployment,
                    judge=row.judge,
                    against=row.against,
                    limit=row.limit,
                    scorers=[ScorerSpec.model_validate(s) for s in row.scorers],
                    dataset=DatasetVersion.model_validate(dataset.model_dump()),
                    held_out=held_out,
                )
            )
        return found


def started(*, db: Database, evaluation_id: int, key_name: str) -> None:
    """The run was launched with the key named ``key_name``."""
    with db.session() as session:
        row = _find(session, evaluation_id)
        row.status, row.key_name, row.started_at, row.message = JobStatus.RUNNING, key_name, utcnow(), ""
        session.commit()


def key_of(*, db: Database, evaluation_id: int) -> str:
    """The name of the key the run was launched with ("" before its launch)."""
    with db.session() as session:
        row = session.get(Evaluation, evaluation_id)
        return row.key_name if row else ""


def progressed(*, db: Database, evaluation_id: int, progress: Progress) -> None:
    with db.session() as session:
        row = _find(session, evaluation_id)
        if (row.done, row.total) != (progress.done, progress.total):
            row.done, row.total = progress.done, progress.total
            session.commit()


def finish(*, db: Database, evaluation_id: int, result: EvalResult | None, failure: str) -> None:
    """The run ended: its result recorded (Succeeded), or Failed with ``result.failure`` or ``failure``."""
    with db.session() as session:
        row = _find(session, evaluation_id)
        row.finished_at = utcnow()
        if result is None or result.failure:
            row.status = JobStatus.FAILED
            row.message = result.failure if result is not None and result.failure else failure
        else:
            row.status = JobStatus.SUCCEEDED
            row.summary = {k: v.model_dump(exclude_none=True) for k, v in result.summary.items()}
            row.examples = [e.model_dump(mode="json", exclude_defaults=True) for e in result.examples]
            row.errors, row.timings = result.errors, result.timings
            row.done = row.total = len(result.examples)
            row.message = ", ".join(f"{k} {v.mean:.3f}" for k, v in result.summary.items())
        add_events(session, kind=KIND, name=str(evaluation_id), events=[NewEvent(row.status.value, row.message)])
        session.commit()
