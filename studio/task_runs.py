"""What the controller's runners of one-off tasks share (evaluations, benchmark runs): a gateway key made for the
run's owner and revoked at its end, the task that runs ``python -m MODULE PLAN``, the plan written where the task
reads it, and the files it leaves read back.

A run acts exactly as its owner may: its key is made as them (``services.keys.create_key``), limited to the
deployments the run asks and expiring after ``KEY_LIFETIME``, so a run whose end was missed stops working on its own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

import pydantic
from sqlmodel import select

from studio.backends.base import Backend, TaskSpec
from studio.db import Database, utcnow
from studio.errors import CoveError
from studio.jobs import paths_for
from studio.models import ApiKeyCreate, User
from studio.services import keys
from studio.settings import Settings
from studio.values import DEFAULT_CLUSTER, JobStatus, Principal, Resources

log = logging.getLogger(__name__)

KEY_LIFETIME = timedelta(days=1)
ENV = (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("PYTHONUNBUFFERED", "1"))
Read = TypeVar("Read", bound=pydantic.BaseModel)


def principal_of(db: Database, name: str) -> Principal:
    """The owner, as the run acts: their key is made as them."""
    with db.session() as session:
        user = session.exec(select(User).where(User.name == name)).one()
        return Principal(name=user.name, role=user.role, groups=frozenset(user.groups))


def owner_key(db: Database, *, owner: str, name: str, deployments: Iterable[str]) -> str:
    """A key named ``name`` made as ``owner``, reaching only ``deployments``, expiring after ``KEY_LIFETIME``."""
    made = keys.create_key(
        db=db,
        actor=principal_of(db, owner),
        data=ApiKeyCreate(name=name, deployments=sorted(set(deployments)), expires_at=utcnow() + KEY_LIFETIME),
    )
    return made.key


def revoke_owner_key(db: Database, *, owner: str, name: str) -> None:
    """The key named ``name`` stops working; one already gone is nothing to revoke."""
    if not name:
        return
    try:
        keys.revoke_key(db=db, actor=principal_of(db, owner), name=name)
    except CoveError as exc:
        log.info("key %s: %s", name, exc)


def task_spec(
    settings: Settings, backend: Backend, *, name: str, module: str, folder: Path, plan_file: str, python: str
) -> TaskSpec:
    """``python -m MODULE FOLDER/PLAN_FILE`` as a task in ``folder`` (as the task sees it), with one CPU."""
    seen = paths_for(settings, backend).of(folder)
    return TaskSpec(
        name=name,
        command=("python" if backend.runs_images else python, "-m", module, f"{seen}/{plan_file}"),
        workdir=seen,
        image=settings.trainer_image,
        env=ENV,
        resources=Resources(cpu=1, memory_mib=1024),
    )


def write_plan(folder: Path, plan_file: str, plan: pydantic.BaseModel, *, stale: Sequence[str]) -> None:
    """The plan written whole (readable by the owner only: it may hold a key), the files of a previous launch
    (``stale``) removed first so they are not read as this one's."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    tmp = folder / f".{plan_file}.tmp"
    tmp.write_text(plan.model_dump_json(indent=2))
    tmp.chmod(0o600)
    tmp.replace(folder / plan_file)


def read(path: Path, model: type[Read]) -> Read | None:
    """A file the task wrote, or None when it is missing or not (yet) whole."""
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, pydantic.ValidationError):
        return None


class Run(Protocol):
    """What the shared runner reads of an unfinished run (``services.evaluations.Active``, ``…benchmarks.Active``)."""

    @property
    def id(self) -> int: ...
    @property
    def owner(self) -> str: ...
    @property
    def status(self) -> JobStatus: ...
    @property
    def key_name(self) -> str: ...
    @property
    def task(self) -> str: ...


RunT = TypeVar("RunT", bound=Run)
ResultT = TypeVar("ResultT", bound=pydantic.BaseModel)
ProgressT = TypeVar("ProgressT", bound=pydantic.BaseModel)


class TaskRunner(Generic[RunT, ResultT, ProgressT]):
    """The controller's loop over one kind of run: each pass, every unfinished run is launched as a task on the
    control plane's own cluster when it has none (its previous key revoked, a new one made, the plan written), a
    running one's progress recorded, an ended one's result stored and its key revoked. A subclass says what kind:
    its words, module, files and types, and the service calls that read and record its rows."""

    noun: ClassVar[str]  # in logs: "evaluation 7"
    process: ClassVar[str]  # in failures: "the evaluation process ended without a result"
    module: ClassVar[str]  # ``python -m MODULE PLAN``
    folder_name: ClassVar[str]  # under settings.models_dir
    plan_file: ClassVar[str]
    progress_file: ClassVar[str]
    result_file: ClassVar[str]
    progress_type: type[ProgressT]
    result_type: type[ResultT]

    def __init__(self, *, db: Database, settings: Settings, python: str = sys.executable) -> None:
        self.db, self.settings, self.python = db, settings, python

    # what a kind of run says -------------------------------------------------------------------------------------

    def active(self) -> list[RunT]:
        raise NotImplementedError

    def waiting(self, run: RunT) -> bool:
        """Whether ``run`` cannot be launched yet (it stays queued)."""
        return False

    def key_for(self, run: RunT) -> tuple[str, Iterable[str]] | None:
        """The name of the run's key and the deployments it reaches; None: the run needs no key."""
        raise NotImplementedError

    def plan(self, run: RunT, backend: Backend, key: str | None) -> pydantic.BaseModel:
        raise NotImplementedError

    def started(self, run: RunT, key_name: str) -> None:
        raise NotImplementedError

    def key_of(self, run: RunT) -> str:
        raise NotImplementedError

    def progressed(self, run: RunT, progress: ProgressT) -> None:
        raise NotImplementedError

    def finish(self, run: RunT, result: ResultT | None, failure: str) -> None:
        raise NotImplementedError

    # the loop ----------------------------------------------------------------------------------------------------

    def folder_of(self, run_id: int) -> Path:
        return self.settings.models_dir / self.folder_name / str(run_id)

    def reconcile(self, backend_of: dict[str, Backend]) -> set[str]:
        """One pass over the unfinished runs; returns the tasks that belong to one."""
        backend = backend_of.get(DEFAULT_CLUSTER)
        if backend is None:
            return set()
        owned = set()
        for run in self.active():
            owned.add(run.task)
            try:
                self._one(backend, run)
            except CoveError as exc:
                log.warning("%s %d: %s", self.noun, run.id, exc)
                self._end(run, None, f"it could not run: {exc}")
        return owned

    def _one(self, backend: Backend, run: RunT) -> None:
        folder = self.folder_of(run.id)
        if run.status == JobStatus.QUEUED or run.task not in backend.tasks():
            if self.waiting(run):
                return
            if run.status == JobStatus.RUNNING:  # its task is gone (a restart lost it): try again, afresh
                log.info("%s %d: its task is gone; starting it again", self.noun, run.id)
            self._launch(backend, run, folder)
        state = backend.run_task(
            task_spec(
                self.settings,
                backend,
                name=run.task,
                module=self.module,
                folder=folder,
                plan_file=self.plan_file,
                python=self.python,
            )
        )
        if state.phase in ("pending", "running"):
            progress = read(folder / self.progress_file, self.progress_type)
            if progress is not None:
                self.progressed(run, progress)
            return
        result = read(folder / self.result_file, self.result_type)
        failure = state.message or f"the {self.process} process ended without a result"
        if state.log_tail and result is None:
            failure += ": " + " / ".join(line for line in state.log_tail[-3:] if line.strip())
        self._end(run, result, failure)
        backend.stop_task(run.task)

    def _launch(self, backend: Backend, run: RunT, folder: Path) -> None:
        if run.key_name:  # a previous launch's
            self._revoke(run)
        name, key = "", None
        wanted = self.key_for(run)
        if wanted is not None:
            name, deployments = wanted
            key = owner_key(self.db, owner=run.owner, name=name, deployments=deployments)
        plan = self.plan(run, backend, key)
        write_plan(folder, self.plan_file, plan, stale=(self.result_file, self.progress_file))
        self.started(run, name)
        log.info("%s %d: started", self.noun, run.id)

    def _revoke(self, run: RunT) -> None:
        """The key the run asked with (named at its launch) stops working."""
        revoke_owner_key(self.db, owner=run.owner, name=self.key_of(run))

    def _end(self, run: RunT, result: ResultT | None, failure: str) -> None:
        self.finish(run, result, failure)
        self._revoke(run)
