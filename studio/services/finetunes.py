"""Fine-tune jobs: what users ask for, how the controller runs them, what the jobs report, and the model version a
job that succeeds becomes.

A user creates a job (a base model version, a dataset version, settings laid over the defaults for the base's
size, a pool): it is admitted against the pool like a deployment and holds its claim until it ends. The controller
(``active`` → launch → ``observe``) plans each attempt (``studio.finetuning.TrainPlan``, with a fresh report token)
and runs it as a task on the pool's backend; the running trainer reports ``Progress`` with that token
(``report``), so a reload, a closed tab or a restarted control plane still shows it. When the task ends the
controller reads its ``Result``: a success is registered as a new version of the target model with its
``Lineage``; anything else fails the job with the cause, and ``resume`` starts a new attempt from the last
checkpoint. ``cancel`` asks the controller to stop it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import sqlalchemy as sa
from sqlmodel import Session, col, select

from studio import access, finetuning
from studio.db import Database, utcnow
from studio.errors import Conflict, Forbidden, InvalidSpec, NotFound, QuotaExceeded, invalid, invalid_fields
from studio.finetuning import Lineage, ModelShape, Progress, Result, TrainSettings
from studio.models import (
    Dataset,
    DatasetVersion,
    FineTune,
    FineTuneCreate,
    FineTunePreview,
    FineTunePublic,
    Model,
    ModelVersion,
    Pool,
    User,
)
from studio.pools import Claim, admit
from studio.services import datasets, owned
from studio.services.events import NewEvent, add_events
from studio.services.models import find_version, register_adapter, register_built
from studio.services.pools import JOB_OWNER as CLAIM_OWNER
from studio.services.pools import claims_in, find_pool, lock_pool
from studio.values import DEFAULT_CLUSTER, JobStatus, Principal, Purpose, Resources

KIND = "finetune"
HISTORY_POINTS = 2000  # a loss curve longer than this keeps every other point of its older half
BYTES_PER_PARAMETER = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int8": 1}
FINISHED = JobStatus.finished_states()
CHARS_PER_TOKEN = 4  # English text, roughly: for estimates before the dataset is tokenized


def _find(session: Session, name: str, actor: Principal | None = None) -> FineTune:
    row = session.exec(select(FineTune).where(FineTune.name == name)).first()
    if row is None:
        raise NotFound(f"no fine-tune named {name!r}", hint="see `cove finetune list`")
    if actor is not None:
        owned.check(actor, row, kind=KIND)
    return row


def parameters_of(folder: Path, size_bytes: int) -> int:
    """A model's parameter count, near enough to pick defaults: its weights' size over its dtype's width."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return size_bytes // BYTES_PER_PARAMETER.get(dtype, 4)


def settings_for(parameters: int, given: dict[str, Any]) -> TrainSettings:
    """The defaults for a model of ``parameters`` with the user's values laid over them; InvalidSpec naming every
    field that is wrong."""
    try:
        return TrainSettings.model_validate(finetuning.defaults_for(parameters) | given)
    except pydantic.ValidationError as exc:
        raise invalid(invalid_fields(exc.errors(), prefix=("settings",))) from exc


def _admit(session: Session, pool: Pool, *, name: str, resources: Resources, queued: bool) -> str:
    """'' when the job fits now; with ``queued`` (the cluster queues jobs), why it waits; else QuotaExceeded."""
    lock_pool(session, pool)
    held = claims_in(session, pool_id=pool.id or 0, exclude=CLAIM_OWNER + name)
    verdict = admit(pool, held, Claim(CLAIM_OWNER + name, resources))
    if verdict.fits:
        return ""
    if queued:
        return f"queued until pool {pool.name!r} has room: {verdict.reason}"
    raise QuotaExceeded(verdict.reason, hint=f"free in pool {pool.name!r}: {verdict.free.describe()}")


@dataclass(frozen=True)
class _Resolved:
    base: ModelVersion
    dataset: DatasetVersion
    pool: Pool
    settings: TrainSettings
    shape: ModelShape


def _resolve(session: Session, actor: Principal, data: FineTuneCreate) -> _Resolved:
    """The base, dataset and pool a request names, checked, and its settings over the base's defaults; target
    modules the base does not have are refused naming those it has."""
    base = find_version(session, model=data.model, version=data.model_version)
    if base.adapter_of_id is not None:
        raise InvalidSpec(
            f"{data.model} v{base.version} is an adapter, not a full model",
            hint="fine-tune its base, or a merged version",
        )
    dataset = datasets.find_version(session, dataset=data.dataset, version=data.dataset_version, actor=actor)
    shape = shape_of(Path(base.path))
    settings = settings_for(shape.parameters, data.settings)
    if isinstance(settings.target_modules, list):
        unknown = [m for m in settings.target_modules if m not in shape.targets]
        if unknown:
            raise InvalidSpec(
                f"{data.model} v{base.version} has no module {', '.join(map(repr, unknown))} LoRA can target",
                hint=f"it can target: {', '.join(shape.targets)} (or all-linear)",
                fields=[{"path": "settings.target_modules", "message": f"unknown: {', '.join(unknown)}"}],
            )
    pool = find_pool(session, name=data.pool)
    access.check_pool(actor, pool=pool.name, groups=pool.groups)
    if pool.purpose not in (Purpose.TRAIN, Purpose.ANY):
        training = session.exec(select(Pool.name).where(col(Pool.purpose).in_((Purpose.TRAIN, Purpose.ANY)))).all()
        raise InvalidSpec(
            f"pool {pool.name!r} is for {pool.purpose.value}, not training",
            hint=f"pick a training pool: {', '.join(training) or 'none is configured'}",
        )
    return _Resolved(base, dataset, pool, settings, shape)


def shape_of(folder: Path) -> ModelShape:
    """The base's parameter count and LoRA targets, from its config (no weights read); near enough from its size
    when the config cannot be built here."""
    from studio.trainer import model_shape

    try:
        return model_shape(folder)
    except (OSError, ValueError, KeyError, ImportError):
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0
        return ModelShape(parameters=parameters_of(folder, size), targets=[])


def preview_finetune(*, db: Database, actor: Principal, data: FineTuneCreate) -> FineTunePreview:
    """What ``create_finetune`` would make of ``data``, without making it: the settings, the targets, estimates,
    and whether it fits its pool now. Raises what create would for a bad request."""
    with db.session() as session:
        got = _resolve(session, actor, data)
        held = claims_in(session, pool_id=got.pool.id or 0, exclude=CLAIM_OWNER + data.name)
        verdict = admit(got.pool, held, Claim(CLAIM_OWNER + data.name, data.resources))
    rows = got.dataset.splits.get("train", got.dataset.rows)
    mean_tokens = got.dataset.size_bytes / max(got.dataset.rows, 1) / CHARS_PER_TOKEN
    guess = finetuning.estimate(got.shape.parameters, got.settings, rows, mean_tokens)
    warnings = []
    if guess.memory_mib > data.resources.memory_mib:
        warnings.append(
            f"it may need about {guess.memory_mib} MiB, more than the {data.resources.memory_mib} MiB asked for: ask "
            "for more memory, or lower batch_size or max_length"
        )
    return FineTunePreview(
        settings=got.settings,
        parameters=got.shape.parameters,
        targets=got.shape.targets,
        rows=rows,
        steps=finetuning.total_steps(got.settings, rows),
        memory_mib=guess.memory_mib,
        seconds=guess.seconds,
        fits=verdict.fits,
        free=verdict.free.describe() if verdict.fits else f"{verdict.reason}; free: {verdict.free.describe()}",
        warnings=warnings,
    )


def create_finetune(*, db: Database, actor: Principal, data: FineTuneCreate, queued: bool = False) -> FineTunePublic:
    """Admit and record a job, owned by ``actor``; the controller starts it. ``queued``: the pool's cluster queues
    jobs that do not fit yet (Kueue) instead of refusing them."""
    access.check_group(actor, data.group)
    with db.session() as session:
        if session.exec(select(FineTune.id).where(FineTune.name == data.name)).first() is not None:
            raise Conflict(f"fine-tune {data.name!r} exists", hint="pick another name")
        got = _resolve(session, actor, data)
        base, dataset, pool, settings = got.base, got.dataset, got.pool, got.settings
        target = data.target_model or data.model
        existing = session.exec(select(Model).where(Model.name == target)).first()
        if existing is not None:
            owned.check(actor, existing, kind="model")
        waiting = _admit(session, pool, name=data.name, resources=data.resources, queued=queued)
        assert base.id is not None and dataset.id is not None and pool.id is not None  # noqa: PT018
        row = FineTune(
            name=data.name,
            group=data.group,
            owner=actor.name,
            resources=data.resources,
            settings=settings,
            base_version_id=base.id,
            dataset_version_id=dataset.id,
            pool_id=pool.id,
            target_model=target,
            message=waiting,
        )
        session.add(row)
        said = (
            f"{data.model} v{base.version} on {data.dataset} v{dataset.version} in pool {pool.name}, "
            f"to become a new version of {target}"
        )
        add_events(session, kind=KIND, name=data.name, actor=actor.name, events=[NewEvent("Created", said)])
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"fine-tune {data.name!r} exists", hint="pick another name") from exc
        return _public(session, row)


def _public(session: Session, row: FineTune) -> FineTunePublic:
    base = session.get(ModelVersion, row.base_version_id)
    model = session.get(Model, base.model_id) if base else None
    dataset_version = session.get(DatasetVersion, row.dataset_version_id)
    dataset = session.get(Dataset, dataset_version.dataset_id) if dataset_version else None
    pool = session.get(Pool, row.pool_id)
    result = session.get(ModelVersion, row.result_version_id) if row.result_version_id else None
    return FineTunePublic.model_validate(
        row.model_dump()
        | {
            "model": model.name if model else "?",
            "model_version": base.version if base else 0,
            "dataset": dataset.name if dataset else "?",
            "dataset_version": dataset_version.version if dataset_version else 0,
            "pool": pool.name if pool else "?",
            "cluster": pool.cluster if pool else DEFAULT_CLUSTER,
            "result_version": result.version if result else None,
        }
    )


def list_finetunes(
    *, db: Database, actor: Principal, offset: int = 0, limit: int | None = None
) -> list[FineTunePublic]:
    """The jobs ``actor`` may see, newest first."""
    with db.session() as session:
        rows = session.exec(
            select(FineTune)
            .where(owned.visible(FineTune, actor))
            .order_by(col(FineTune.created_at).desc(), col(FineTune.id).desc())
            .offset(offset)
            .limit(limit)
        ).all()
        return [_public(session, row) for row in rows]


def count_finetunes(*, db: Database, actor: Principal) -> int:
    with db.session() as session:
        query = sa.select(sa.func.count()).select_from(FineTune).where(owned.visible(FineTune, actor))
        return int(session.execute(query).scalar_one())


def get_finetune(*, db: Database, actor: Principal, name: str) -> FineTunePublic:
    with db.session() as session:
        return _public(session, _find(session, name, actor))


def cancel_finetune(*, db: Database, actor: Principal, name: str) -> FineTunePublic:
    """Ask the controller to stop the job (the trainer saves a checkpoint first); it becomes Cancelled."""
    with db.session() as session:
        row = _find(session, name, actor)
        if row.status in FINISHED:
            raise Conflict(f"fine-tune {name!r} has ended ({row.status.value})", hint="nothing to cancel")
        if not row.cancelling:
            row.cancelling, row.updated_at = True, utcnow()
            session.add(row)
            add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("Cancelling", "asked")])
            session.commit()
        return _public(session, row)


def resume_finetune(*, db: Database, actor: Principal, name: str, queued: bool = False) -> FineTunePublic:
    """Start a new attempt of a failed or cancelled job, from its newest checkpoint; admitted again."""
    with db.session() as session:
        row = _find(session, name, actor)
        if row.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            hint = "it is still running" if row.status not in FINISHED else "its version is registered"
            raise Conflict(
                f"fine-tune {name!r} is {row.status.value}: only a failed or cancelled one resumes", hint=hint
            )
        pool = session.get(Pool, row.pool_id)
        assert pool is not None
        waiting = _admit(session, pool, name=name, resources=row.resources, queued=queued)
        row.status, row.message, row.cancelling = JobStatus.QUEUED, waiting, False
        row.attempt += 1
        row.finished_at, row.updated_at = None, utcnow()
        session.add(row)
        said = f"attempt {row.attempt}, from the newest checkpoint"
        add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("Resumed", said)])
        session.commit()
        return _public(session, row)


def delete_finetune(*, db: Database, actor: Principal, name: str, folders: Path) -> None:
    """Forget an ended job and its folder under ``folders`` (checkpoints, adapter; the version it registered
    stays, its files in the model cache)."""
    with db.session() as session:
        row = _find(session, name, actor)
        if row.status not in FINISHED:
            raise Conflict(
                f"fine-tune {name!r} is {row.status.value}", hint=f"cancel it first: `cove finetune cancel {name}`"
            )
        session.delete(row)
        add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("Deleted", "forgotten")])
        session.commit()
    shutil.rmtree(folders / name, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ progress


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def report(*, db: Database, name: str, token: str, progress: Progress) -> None:
    """A running job's progress, carrying the job's own token (Forbidden otherwise). Kept as the newest progress
    and a point of the loss curve; a job the controller has not seen start yet is Running from its first report."""
    with db.session() as session:
        row = session.exec(select(FineTune).where(FineTune.name == name)).first()
        if row is None or not row.report_hash or not hmac.compare_digest(row.report_hash, token_hash(token)):
            raise Forbidden(f"this token may not report for fine-tune {name!r}", hint="only the job's own token may")
        if row.status in FINISHED:
            return  # a late report of an attempt that has ended
        row.progress = progress.model_dump(mode="json", exclude_none=True)
        if progress.loss is not None or progress.eval_loss is not None:
            row.history = _appended(row.history, progress)
        if row.status == JobStatus.QUEUED:
            row.status, row.message = JobStatus.RUNNING, ""
        row.updated_at = utcnow()
        session.add(row)
        session.commit()


def _appended(history: list[dict[str, Any]], progress: Progress) -> list[dict[str, Any]]:
    point = {
        k: v
        for k, v in progress.model_dump(include={"step", "loss", "eval_loss", "learning_rate"}).items()
        if v is not None and not (isinstance(v, float) and not math.isfinite(v))
    }
    points = [*history, point]
    if len(points) > HISTORY_POINTS:
        half = len(points) // 2
        points = points[:half:2] + points[half:]
    return points


# ------------------------------------------------------------------------------------------------ the controller's


@dataclass(frozen=True)
class Active:
    """One unfinished job as the controller sees it."""

    name: str
    status: JobStatus
    cancelling: bool
    attempt: int
    owner: str
    settings: TrainSettings
    resources: Resources
    base_version_id: int
    base_path: str
    base_name: str
    base_revision: str | None
    dataset: DatasetVersion
    dataset_name: str
    target_model: str
    pool: str
    cluster: str
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[dict[str, Any], ...]

    @property
    def task(self) -> str:
        return task_name(self.name, self.attempt)


def task_name(name: str, attempt: int) -> str:
    """The backend's name for an attempt's task (a Kubernetes Job is made once; a resume is a new one)."""
    return f"ft-{name}-{attempt}"


def saved_log(folders: Path, name: str, attempt: int) -> Path:
    """Where an ended attempt's log is kept, in the job's folder (the task and its own log are gone by then)."""
    return folders / name / f"{task_name(name, attempt)}.log"


def active(*, db: Database) -> list[Active]:
    with db.session() as session:
        rows = session.exec(
            select(FineTune).where(col(FineTune.status).not_in(FINISHED)).order_by(col(FineTune.id))
        ).all()
        found = []
        for row in rows:
            base = session.get(ModelVersion, row.base_version_id)
            model = session.get(Model, base.model_id) if base else None
            dataset = session.get(DatasetVersion, row.dataset_version_id)
            dataset_row = session.get(Dataset, dataset.dataset_id) if dataset else None
            pool = session.get(Pool, row.pool_id)
            assert base and model and dataset and dataset_row and pool  # noqa: PT018  (RESTRICT keeps them)
            found.append(
                Active(
                    name=row.name,
                    status=row.status,
                    cancelling=row.cancelling,
                    attempt=row.attempt,
                    owner=row.owner,
                    settings=row.settings,
                    resources=row.resources,
                    base_version_id=row.base_version_id,
                    base_path=base.path,
                    base_name=f"{model.name}@{base.version}",
                    base_revision=base.revision,
                    dataset=DatasetVersion.model_validate(dataset.model_dump()),
                    dataset_name=f"{dataset_row.name}@{dataset.version}",
                    target_model=row.target_model,
                    pool=pool.name,
                    cluster=pool.cluster,
                    node_selector=tuple(sorted(pool.node_selector.items())),
                    tolerations=tuple(pool.tolerations),
                )
            )
        return found


def new_report_token(*, db: Database, name: str) -> str:
    """A fresh token for the attempt about to start (the previous attempt's stops working)."""
    token = secrets.token_urlsafe(32)
    with db.session() as session:
        row = _find(session, name)
        row.report_hash, row.updated_at = token_hash(token), utcnow()
        if row.started_at is None:
            row.started_at = utcnow()
        session.add(row)
        session.commit()
    return token


def observe(*, db: Database, name: str, status: JobStatus, message: str) -> bool:
    """Record what the controller sees of an unfinished job; True when that changed something."""
    with db.session() as session:
        row = _find(session, name)
        if (row.status, row.message) == (status, message):
            return False
        events = [NewEvent(status.value, message or status.value.lower())] if row.status != status else []
        row.status, row.message, row.updated_at = status, message, utcnow()
        if status in FINISHED:
            row.finished_at = utcnow()
        session.add(row)
        add_events(session, kind=KIND, name=name, events=events)
        session.commit()
        return True


def finish(*, db: Database, job: Active, result: Result | None, folder: Path, cache_dir: Path, failure: str) -> None:
    """An attempt ended. A success registers ``folder/model`` as the next version of the target model, with its
    lineage; otherwise the job fails with the trainer's words, or ``failure`` (the backend's) when it left none."""
    if result is None or result.outcome != finetuning.Outcome.SUCCEEDED:
        said = result.message if result is not None and result.message else failure
        if result is not None and result.last_checkpoint:
            said += f" — `cove finetune resume {job.name}` goes on from step {result.last_checkpoint}"
        elif result is None:
            said += f" — `cove finetune resume {job.name}` goes on from the newest checkpoint"
        _metrics(db, job.name, result)
        observe(db=db, name=job.name, status=JobStatus.FAILED, message=said)
        return
    owner = _principal(db, job.owner)
    lineage = Lineage(
        base=job.base_name,
        base_revision=job.base_revision,
        dataset=job.dataset_name,
        dataset_sha256=job.dataset.sha256,
        settings_hash=job.settings.hash,
        settings=job.settings.model_dump(mode="json"),
        job=job.name,
        metrics=result.metrics,
        serving=job.settings.serving,
    )
    described = f"fine-tuned from {job.base_name} on {job.dataset_name}"
    if job.settings.serving == finetuning.Serving.ADAPTER:
        model = register_adapter(
            db=db,
            actor=owner,
            name=job.target_model,
            folder=folder / finetuning.ADAPTER_DIR,
            repo_id=f"cove-finetunes/{job.target_model}-adapter",
            cache_dir=cache_dir,
            base_version_id=job.base_version_id,
            description=described,
            lineage=lineage.model_dump(mode="json"),
        )
    else:
        model = register_built(
            db=db,
            actor=owner,
            name=job.target_model,
            folder=folder / finetuning.MERGED_DIR,
            repo_id=f"cove-finetunes/{job.target_model}",
            cache_dir=cache_dir,
            description=described,
            lineage=lineage.model_dump(mode="json"),
        )
    with db.session() as session:
        row = _find(session, job.name)
        version = session.exec(
            select(ModelVersion)
            .join(Model, col(ModelVersion.model_id) == Model.id)
            .where(Model.name == model.name, ModelVersion.version == model.latest.version)
        ).one()
        row.result_version_id = version.id
        row.metrics = result.metrics.model_dump(mode="json")
        session.add(row)
        session.commit()
    said = f"registered as {model.name} v{model.latest.version}"
    observe(db=db, name=job.name, status=JobStatus.SUCCEEDED, message=said)


def _metrics(db: Database, name: str, result: Result | None) -> None:
    if result is None:
        return
    with db.session() as session:
        row = _find(session, name)
        row.metrics = result.metrics.model_dump(mode="json")
        session.add(row)
        session.commit()


def _principal(db: Database, name: str) -> Principal:
    with db.session() as session:
        user = session.exec(select(User).where(User.name == name)).one()
        return Principal(name=user.name, role=user.role, groups=frozenset(user.groups))
