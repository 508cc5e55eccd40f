"""Benchmark runs: a deployment's serving benchmark, stored per deployment and model version; how the controller
runs them; and what the promotion gate reads of them.

A user creates one (``create_benchmark``): the deployment is checked (theirs, or their group's) and the model
version it serves now is recorded with the run, so results stay attached to what was measured when the deployment
moves on. With a dataset, the workload's lengths are the (prompt, answer) token counts of its rows under the
deployment's model's chat template. A Queued row is written — nothing runs in the call. The controller
(``studio.bench_runs``) starts each queued one as a task (``python -m studio.bench PLAN``) with a gateway key of the
owner's limited to the deployment, records its progress, and stores its result (``finish``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from studio import access, bench_results
from studio.bench_results import Difference
from studio.benchmark import BenchProgress, BenchResult, BenchSpec
from studio.db import Database, utcnow
from studio.errors import Conflict, InvalidSpec, NotFound
from studio.gate import GateConfig, Results
from studio.models import (
    BenchmarkRun,
    BenchmarkRunCreate,
    BenchmarkRunPublic,
    Deployment,
    Model,
    ModelVersion,
)
from studio.services import datasets, owned
from studio.services.events import NewEvent, add_events
from studio.services.models import find_version
from studio.values import JobStatus, Principal

KIND = "benchmark"
MAX_DATASET_ROWS = 2000  # rows measured for a workload's lengths: enough for its distribution, quick to tokenize


def _find(session: Session, run_id: int, actor: Principal | None = None) -> BenchmarkRun:
    row = session.get(BenchmarkRun, run_id)
    if row is None:
        raise NotFound(f"no benchmark run {run_id}", hint="see `cove bench list`")
    if actor is not None:
        access.check_owner(actor, kind=KIND, name=str(row.id), owner=row.owner, group=row.group)
    return row


def _deployment(session: Session, actor: Principal, name: str) -> Deployment:
    row = session.exec(select(Deployment).where(Deployment.name == name)).first()
    if row is None:
        raise NotFound(f"no deployment named {name!r}", hint="see `cove deploy list`")
    access.check_owner(actor, kind="deployment", name=row.name, owner=row.owner, group=row.group)
    return row


def dataset_lengths(folder: Path, rows: list[list[dict[str, str]]]) -> list[tuple[int, int]]:
    """(prompt tokens, answer tokens) of each conversation under the chat template in the model ``folder``."""
    from studio.renderer import ChatRenderer

    measured = ChatRenderer(folder).measure(rows)
    return [(prompt, whole - prompt) for whole, prompt in measured if prompt >= 1 and whole - prompt >= 1]


def _conversations(session: Session, actor: Principal, name: str, version: int | None) -> list[list[dict[str, str]]]:
    from studio.chats import ColumnMap, Format, RowError, problems_of, to_messages
    from studio.datastore import rows_of

    found = datasets.find_version(session, dataset=name, version=version, actor=actor)
    columns = ColumnMap(format=Format(found.format), columns=found.columns)
    split = "eval" if "eval" in found.files else "train"
    conversations: list[list[dict[str, str]]] = []
    for file in found.files.get(split, []):
        for _line, row in rows_of(Path(found.path) / file, found.builder):
            try:
                if not isinstance(row, Mapping):
                    continue
                messages = to_messages(row, columns)
            except RowError:
                continue
            if not problems_of(messages):
                conversations.append(messages)
            if len(conversations) >= MAX_DATASET_ROWS:
                return conversations
    return conversations


def create_benchmark(*, db: Database, actor: Principal, data: BenchmarkRunCreate) -> BenchmarkRunPublic:
    """Record a benchmark run of ``data.deployment``, owned by ``actor``, of the version it serves now; the
    controller runs it. InvalidSpec for a dataset whose rows give no lengths (or whose model has no chat template)."""
    with db.session() as session:
        deployment = _deployment(session, actor, data.deployment)
        version = session.get(ModelVersion, deployment.model_version_id)
        assert version is not None  # the foreign key restricts
        spec = data.spec
        if data.dataset is not None:
            rows = _conversations(session, actor, data.dataset, data.dataset_version)
            pairs = dataset_lengths(Path(version.path), rows) if rows else []
            if not pairs:
                raise InvalidSpec(
                    f"dataset {data.dataset} has no rows to take lengths from",
                    hint="give a chat dataset with a prompt and an answer in each row",
                )
            workload = spec.workload.model_copy(update={"lengths": pairs})
            spec = spec.model_copy(update={"workload": workload})
        row = BenchmarkRun(
            deployment=deployment.name,
            target=data.target,
            replica=data.replica,
            group=data.group,
            owner=actor.name,
            model_version_id=version.id or 0,
            spec=spec.model_dump(mode="json"),
            tokenizer=version.path if data.tokenizer else None,
        )
        session.add(row)
        session.flush()
        said = f"{deployment.name} ({data.target}): {spec.words()}"
        add_events(session, kind=KIND, name=str(row.id), actor=actor.name, events=[NewEvent("Created", said)])
        session.commit()
        return _public(session, row)


def _public(session: Session, row: BenchmarkRun) -> BenchmarkRunPublic:
    version = session.get(ModelVersion, row.model_version_id)
    model = session.get(Model, version.model_id) if version else None
    return BenchmarkRunPublic.model_validate(
        row.model_dump() | {"model": model.name if model else "?", "model_version": version.version if version else 0}
    )


def _listed(actor: Principal, deployment: str | None, model: str | None, version: int | None) -> Any:
    query = select(BenchmarkRun).where(owned.visible(BenchmarkRun, actor))
    if deployment is not None:
        query = query.where(BenchmarkRun.deployment == deployment)
    if model is not None:
        query = query.join(ModelVersion, col(ModelVersion.id) == BenchmarkRun.model_version_id).join(
            Model, col(Model.id) == ModelVersion.model_id
        )
        query = query.where(Model.name == model)
        if version is not None:
            query = query.where(ModelVersion.version == version)
    return query


def list_benchmarks(
    *,
    db: Database,
    actor: Principal,
    deployment: str | None = None,
    model: str | None = None,
    version: int | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[BenchmarkRunPublic]:
    """The runs ``actor`` may see (of ``deployment``; of ``model``, of its ``version``), newest first."""
    with db.session() as session:
        query = _listed(actor, deployment, model, version).order_by(col(BenchmarkRun.id).desc())
        return [_public(session, row) for row in session.exec(query.offset(offset).limit(limit))]


def count_benchmarks(
    *,
    db: Database,
    actor: Principal,
    deployment: str | None = None,
    model: str | None = None,
    version: int | None = None,
) -> int:
    with db.session() as session:
        query = _listed(actor, deployment, model, version).subquery()
        return int(session.exec(sa.select(sa.func.count()).select_from(query)).one()[0])  # type: ignore[call-overload]


def get_benchmark(*, db: Database, actor: Principal, run_id: int) -> BenchmarkRunPublic:
    with db.session() as session:
        return _public(session, _find(session, run_id, actor))


def delete_benchmark(*, db: Database, actor: Principal, run_id: int) -> None:
    """Forget an ended run; one that runs is refused (Conflict)."""
    with db.session() as session:
        row = _find(session, run_id, actor)
        if not row.status.finished:
            raise Conflict(f"benchmark run {run_id} is {row.status.value.lower()}", hint="delete it when it ends")
        session.delete(row)
        add_events(session, kind=KIND, name=str(run_id), actor=actor.name, events=[NewEvent("Deleted", "")])
        session.commit()


def compare_benchmarks(*, db: Database, actor: Principal, a: int, b: int) -> list[Difference]:
    """Two succeeded runs figure by figure (``bench_results.compare``: b − a); Conflict for one without a result."""
    results = []
    for run_id in (a, b):
        found = get_benchmark(db=db, actor=actor, run_id=run_id)
        if found.result is None:
            raise Conflict(f"benchmark run {run_id} has no result ({found.status.value})", hint="compare ended runs")
        results.append(found.result)
    return bench_results.compare(results[0], results[1])


def slo_of(session: Session, version_id: int, gate: GateConfig) -> tuple[bool | None, str]:
    """Whether the newest succeeded run of a model version that bears on the gate's SLO (``bench_results.meets``)
    met it at the gate's rate, and where that came from ("benchmark run 12"); (None, "") when no run bears on it.
    For the promotion gate, inside its transaction."""
    if not gate.slo:
        return None, ""
    query = (
        select(BenchmarkRun)
        .where(BenchmarkRun.model_version_id == version_id, BenchmarkRun.status == JobStatus.SUCCEEDED)
        .order_by(col(BenchmarkRun.finished_at).desc(), col(BenchmarkRun.id).desc())
    )
    for row in session.exec(query):
        if row.result is None:
            continue
        met = bench_results.meets(BenchResult.model_validate(row.result), gate.slo, gate.slo_rate)
        if met is not None:
            return met, f"benchmark run {row.id}"
    return None, ""


def with_stored_slo(
    *, db: Database, model: str, version: int, results: Mapping[int, Results] | None
) -> dict[int, Results]:
    """``results`` (by version number) with the candidate ``version``'s ``slo_met`` read from its stored runs
    (``slo_of``) when the caller did not give it and the model's gate has an SLO; the source says which run."""
    given = dict(results or {})
    mine = given.get(version, Results())
    if mine.slo_met is not None:
        return given
    with db.session() as session:
        row = session.exec(select(Model).where(Model.name == model)).first()
        if row is None or not row.gate.slo:
            return given
        found = find_version(session, model=model, version=version)
        met, source = slo_of(session, found.id or 0, row.gate)
    if met is None:
        return given
    given[version] = replace(mine, slo_met=met, slo_source=source)
    return given


# ------------------------------------------------------------------------------------------- the controller's


@dataclass(frozen=True)
class Active:
    """One unfinished run as the controller sees it: where to send (the deployment's name through the gateway, or
    one ready replica's endpoint and the model name its runtime expects)."""

    id: int
    owner: str
    status: JobStatus
    key_name: str
    deployment: str
    target: str
    replica_url: str | None  # for target replica: None while that replica is not ready
    replica_model: str
    spec: BenchSpec
    tokenizer: str | None

    @property
    def task(self) -> str:
        return f"bench-{self.id}"


def active(*, db: Database) -> list[Active]:
    """Every queued or running run, oldest first."""
    with db.session() as session:
        query = (
            select(BenchmarkRun)
            .where(col(BenchmarkRun.status).in_((JobStatus.QUEUED, JobStatus.RUNNING)))
            .order_by(col(BenchmarkRun.id))
        )
        found = []
        for row in session.exec(query):
            dep = session.exec(select(Deployment).where(Deployment.name == row.deployment)).first()
            endpoints = dep.endpoints if dep else []
            url = endpoints[row.replica] if row.replica < len(endpoints) else None
            found.append(
                Active(
                    id=row.id or 0,
                    owner=row.owner,
                    status=row.status,
                    key_name=row.key_name,
                    deployment=row.deployment,
                    target=row.target,
                    replica_url=url,
                    replica_model=(dep.upstream_model if dep else "") or row.deployment,
                    spec=BenchSpec.model_validate(row.spec),
                    tokenizer=row.tokenizer,
                )
            )
        return found


def started(*, db: Database, run_id: int, key_name: str) -> None:
    with db.session() as session:
        row = _find(session, run_id)
        row.status, row.key_name, row.started_at, row.message = JobStatus.RUNNING, key_name, utcnow(), ""
        session.commit()


def key_of(*, db: Database, run_id: int) -> str:
    with db.session() as session:
        row = session.get(BenchmarkRun, run_id)
        return row.key_name if row else ""


def progressed(*, db: Database, run_id: int, progress: BenchProgress) -> None:
    with db.session() as session:
        row = _find(session, run_id)
        if (row.steps_done, row.progress) != (progress.steps, progress.line):
            row.steps_done, row.progress = progress.steps, progress.line
            session.commit()


def finish(*, db: Database, run_id: int, result: BenchResult | None, failure: str) -> None:
    """The run ended: its result stored (Succeeded; the message says what it found), or Failed with ``failure``.
    A run none of whose requests succeeded failed: it measured nothing."""
    with db.session() as session:
        row = _find(session, run_id)
        row.finished_at = utcnow()
        if result is None or not any(step.completed for step in result.steps):
            first = next((e for step in result.steps for e in step.error_examples), "") if result else ""
            row.status = JobStatus.FAILED
            row.message = f"no request succeeded: {first}" if result is not None else failure
            if result is not None:
                row.result = result.model_dump(mode="json")
        else:
            row.status = JobStatus.SUCCEEDED
            row.result = result.model_dump(mode="json")
            row.steps_done = len(result.steps)
            if result.sweep is not None:
                row.max_rate = result.sweep.value
                row.message = result.sweep.statement
            else:
                step = result.steps[0]
                row.message = (
                    f"{step.completed} done, {step.errors} errors, {step.request_throughput:.2f} req/s, "
                    f"p99 E2EL {step.e2el.p99 or 0:.0f} ms"
                )
        add_events(session, kind=KIND, name=str(run_id), events=[NewEvent(row.status.value, row.message[:500])])
        session.commit()
