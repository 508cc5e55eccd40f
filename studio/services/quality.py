"""The promotion gate's quality evidence, read from stored evaluations.

A model's gate names its evaluation set (``studio.gate.EvalSet``: a dataset version's split and its scorers). A
version's scores are the means of its newest succeeded evaluation on that set, and the source the gate shows is
that evaluation ("evaluation 7, 120 examples"). A version with none says why: one is running, or none was run —
with the `cove eval run …` that would run it. ``start_missing`` creates those evaluations, for a gate that asks a
promotion to start what it lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from studio.db import Database
from studio.errors import CoveError, InvalidSpec
from studio.gate import EvalSet, Results
from studio.models import (
    Dataset,
    DatasetVersion,
    Deployment,
    Evaluation,
    EvaluationCreate,
    Model,
    ModelVersion,
)
from studio.services import evaluations
from studio.values import JobStatus, Principal


@dataclass(frozen=True)
class Evidence:
    """What the evaluation set says of one version: its newest succeeded evaluation (None: none), and one that is
    queued or running."""

    done: Evaluation | None
    pending: Evaluation | None

    @property
    def missing(self) -> bool:
        return self.done is None and self.pending is None


def dataset_version_id(session: Session, evalset: EvalSet) -> int | None:
    """The id of the dataset version ``evalset`` names; None: there is none (removed, or never made)."""
    found = session.exec(
        select(DatasetVersion.id)
        .join(Dataset, col(Dataset.id) == DatasetVersion.dataset_id)
        .where(Dataset.name == evalset.dataset, DatasetVersion.version == evalset.dataset_version)
    ).first()
    return found


def evidence(session: Session, evalset: EvalSet, version_id: int) -> Evidence:
    """The newest succeeded and the newest unfinished evaluation of ``version_id`` on ``evalset``."""
    dataset_id = dataset_version_id(session, evalset)
    if dataset_id is None:
        return Evidence(None, None)
    query = (
        select(Evaluation)
        .options(defer(Evaluation.examples))  # type: ignore[arg-type]
        .where(
            Evaluation.model_version_id == version_id,
            Evaluation.dataset_version_id == dataset_id,
            Evaluation.split == evalset.split,
        )
    )
    done = session.exec(
        query.where(Evaluation.status == JobStatus.SUCCEEDED).order_by(
            col(Evaluation.finished_at).desc(), col(Evaluation.id).desc()
        )
    ).first()
    pending = session.exec(
        query.where(col(Evaluation.status).in_((JobStatus.QUEUED, JobStatus.RUNNING))).order_by(
            col(Evaluation.id).desc()
        )
    ).first()
    return Evidence(done, pending)


def run_command(model: str, version: int, evalset: EvalSet) -> str:
    """The `cove eval run …` that evaluates ``model`` v``version`` on ``evalset``."""
    scorers = " ".join(f"--scorer {s.label}" for s in evalset.scorers)
    limit = f" --limit {evalset.limit}" if evalset.limit else ""
    return (
        f"cove eval run {model}:{version} --dataset {evalset.dataset}:{evalset.dataset_version} "
        f"--split {evalset.split} --deployment DEP {scorers}{limit}"
    )


def results_of(session: Session, *, model: Model, version: ModelVersion) -> Results:
    """``version``'s scores on ``model``'s evaluation set, with their source; no scores, and a source saying how
    to get them, when it has not been evaluated there. The gate must name an evaluation set."""
    evalset = model.gate.evaluation
    assert evalset is not None and version.id is not None  # noqa: PT018 (the caller checks)
    found = evidence(session, evalset, version.id)
    if found.done is not None:
        row = found.done
        scores = {name: float(summary["mean"]) for name, summary in row.summary.items()}
        return Results(scores=scores, source=f"evaluation {row.id}, {row.total} examples")
    if found.pending is not None:
        row = found.pending
        progress = f", {row.done}/{row.total}" if row.total else ""
        return Results(source=f"evaluation {row.id} is {row.status.value.lower()}{progress}: promote when it ends")
    command = run_command(model.name, version.version, evalset)
    return Results(source=f"v{version.version} not evaluated on {evalset.describe()}: run `{command}`")


def serving(session: Session, version: ModelVersion) -> Deployment | None:
    """A deployment that serves ``version`` (one that follows production first, then by name); None: none does."""
    rows = session.exec(
        select(Deployment).where(Deployment.model_version_id == version.id, col(Deployment.deleting).is_(False))
    ).all()
    ranked = sorted(rows, key=lambda d: (d.follows != "production", d.name))
    return ranked[0] if ranked else None


def request(model: Model, version: ModelVersion, deployment: str) -> EvaluationCreate:
    """The evaluation of ``version`` on ``model``'s evaluation set, served by ``deployment``."""
    evalset = model.gate.evaluation
    assert evalset is not None  # the caller checks
    return EvaluationCreate(
        model=model.name,
        model_version=version.version,
        dataset=evalset.dataset,
        dataset_version=evalset.dataset_version,
        split=evalset.split,
        deployment=deployment,
        limit=evalset.limit,
        scorers=list(evalset.scorers),
    )


def start_missing(*, db: Database, actor: Principal, model: str, versions: Iterable[int]) -> list[str]:
    """When ``model``'s gate asks for it (``start_missing``), create as ``actor`` the evaluations on its evaluation
    set that ``versions`` lack (neither a succeeded nor an unfinished one), each served by a deployment of the
    version; what was done or why it could not be, one sentence each."""
    said, wanted = [], []
    with db.session() as session:
        row = session.exec(select(Model).where(Model.name == model)).first()
        if row is None or row.gate.evaluation is None or not row.gate.start_missing:
            return []
        for number in dict.fromkeys(versions):
            version = session.exec(
                select(ModelVersion).where(ModelVersion.model_id == row.id, ModelVersion.version == number)
            ).first()
            if version is None or version.id is None or not evidence(session, row.gate.evaluation, version.id).missing:
                continue
            dep = serving(session, version)
            if dep is None:
                said.append(f"v{number} cannot be evaluated: no deployment serves it (deploy it, then promote again)")
                continue
            wanted.append((number, request(row, version, dep.name)))
    for number, data in wanted:
        try:
            created = evaluations.create_evaluation(db=db, actor=actor, data=data)
        except CoveError as exc:
            said.append(f"v{number} cannot be evaluated: {exc.message}")
            continue
        said.append(f"started evaluation {created.id} of v{number} on {data.deployment}")
    return said


def gate_results(
    session: Session, *, model: Model, versions: Iterable[ModelVersion], given: Mapping[int, Results]
) -> dict[int, Results]:
    """The results the gate judges, by version number. With an evaluation set, each version's scores and their
    source are its stored evaluation's, and the rest of what was given (the SLO) is kept; scores typed in are
    refused (InvalidSpec): an admin who knows better overrides with a reason, which the audit trail keeps. Without
    one, ``given`` as it is."""
    if model.gate.evaluation is None:
        return dict(given)
    if any(r.scores for r in given.values()):
        raise InvalidSpec(
            f"model {model.name!r}'s gate reads its scores from {model.gate.evaluation.describe()}, "
            "not from scores typed in",
            hint="evaluate the version on that set (`cove eval run …`), or (an admin) override with a reason",
        )
    found = {}
    for version in versions:
        stored = results_of(session, model=model, version=version)
        found[version.version] = replace(
            given.get(version.version, Results()), scores=stored.scores, source=stored.source
        )
    return found
