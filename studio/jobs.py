"""The controller's part for fine-tune jobs: each pass, every unfinished job is planned, run as a task on its pool's
backend, watched, and ended.

An attempt starts when its backend has no task of it: the plan (``studio.finetuning.TrainPlan``, with a fresh
report token) is written into the job's folder, and the task runs ``python -m studio.trainer PLAN``. Where tasks run
in containers (Kubernetes) they see the model cache and the datasets at the container's mounts, so the paths the
plan holds are those (``Paths``); the control plane mounts the same claims and reads what the job leaves where it
wrote it. A cancelled job's task is stopped (the trainer saves a checkpoint) and the job is Cancelled. A task that
ended is read through its ``result.json``: ``services.finetunes.finish`` registers a success as a new model version
or fails the job with the cause; then the task is forgotten.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pydantic

from studio import finetuning
from studio.backends.base import Backend, TaskSpec, TaskState
from studio.backends.kubernetes.manifests import pod_path
from studio.db import Database
from studio.errors import CoveError, InvalidSpec
from studio.finetuning import DatasetFiles, Report, Result, TrainPlan
from studio.runtimes import CONTAINER_MODELS_DIR
from studio.services import finetunes
from studio.services.finetunes import Active
from studio.settings import Settings
from studio.values import JobStatus

log = logging.getLogger(__name__)

KEPT_LOG_LINES = 5000


@dataclass(frozen=True)
class Paths:
    """Where a task finds the model cache and the datasets: the control plane's own folders (local processes), or
    a container's mounts of the same claims (``manifests.pod_path``)."""

    settings: Settings
    in_container: bool

    @property
    def models(self) -> str:
        return CONTAINER_MODELS_DIR if self.in_container else str(self.settings.models_dir)

    def of(self, path: str | Path) -> str:
        """``path`` (the control plane's) as the task sees it."""
        if not self.in_container:
            return str(path)
        return pod_path(path, models_dir=self.settings.models_dir, datasets_dir=self.settings.datasets_dir)


def paths_for(settings: Settings, backend: Backend) -> Paths:
    return Paths(settings, in_container=backend.runs_images)


def plan_of(job: Active, *, settings: Settings, paths: Paths, token: str, resume: bool) -> TrainPlan:
    """The attempt's plan, in the task's paths. Pure."""
    folder = settings.finetunes_dir / job.name
    root = Path(job.dataset.path)
    return TrainPlan(
        job=job.name,
        base_path=paths.of(job.base_path),
        base_name=job.base_name,
        dataset=DatasetFiles(
            builder=job.dataset.builder,  # type: ignore[arg-type]  # json | csv | parquet, as the store wrote it
            files={split: [paths.of(root / f) for f in files] for split, files in job.dataset.files.items()},
            columns=job.dataset.columns,
            format=job.dataset.format,
        ),
        settings=job.settings,
        output_dir=paths.of(folder),
        report=Report(url=f"{settings.report_url}/api/v1/finetunes/{job.name}/progress", token=token),
        resume=resume,
        use_cpu=not job.resources.gpu_devices,
    )


def task_of(job: Active, *, settings: Settings, paths: Paths, python: str, image: str) -> TaskSpec:
    """The attempt's task. Pure."""
    folder = paths.of(settings.finetunes_dir / job.name)
    return TaskSpec(
        name=job.task,
        command=(python, "-m", "studio.trainer", f"{folder}/{finetuning.PLAN_FILE}"),
        workdir=folder,
        image=image,
        env=(
            ("HF_HUB_OFFLINE", "1"),
            ("HF_DATASETS_OFFLINE", "1"),
            ("HF_HUB_CACHE", paths.models),
            ("HF_DATASETS_CACHE", f"{folder}/cache"),
            ("TOKENIZERS_PARALLELISM", "false"),
            ("PYTHONUNBUFFERED", "1"),
            # as many threads as cores admitted: more than that only contend (on a busy machine, badly)
            ("OMP_NUM_THREADS", str(max(1, math.floor(job.resources.cpu)))),
        ),
        resources=job.resources,
        pool=job.pool,
        node_selector=job.node_selector,
        tolerations=job.tolerations,
        queue=settings.kueue_queue,
    )


def read_result(folder: Path) -> Result | None:
    """The attempt's ``result.json``; None when it left none (killed) or it cannot be read."""
    try:
        return Result.model_validate_json((folder / finetuning.RESULT_FILE).read_bytes())
    except (OSError, pydantic.ValidationError):
        return None


class JobRunner:
    """Runs fine-tune jobs on the controller's behalf (see the module docstring)."""

    def __init__(self, *, db: Database, settings: Settings, python: str = sys.executable) -> None:
        self.db, self.settings, self.python = db, settings, python
        self.logs_not_kept = 0  # ended attempts whose log could not be written (a full disk): see /healthz

    def reconcile(self, backend_of: dict[str, Backend]) -> set[str]:
        """One pass over the unfinished jobs whose cluster has a backend in ``backend_of``; returns the tasks that
        belong to a job, so the caller may stop the others."""
        owned = set()
        for job in finetunes.active(db=self.db):
            backend = backend_of.get(job.cluster)
            if backend is None:
                continue
            owned.add(job.task)
            try:
                self._one(backend, job)
            except InvalidSpec as exc:  # it can never run as it is (a base its pods cannot see): say so and stop
                finetunes.observe(db=self.db, name=job.name, status=JobStatus.FAILED, message=str(exc))
            except CoveError as exc:  # its cluster did not answer: said on the job, tried again next pass
                log.warning("fine-tune %s: %s", job.name, exc)
                finetunes.observe(db=self.db, name=job.name, status=job.status, message=str(exc))
        return owned

    def _one(self, backend: Backend, job: Active) -> None:
        folder = self.settings.finetunes_dir / job.name
        if job.cancelling:  # SIGTERM first: the trainer saves a checkpoint and says where it stopped
            if job.task in backend.tasks():
                self._keep_log(backend, job, folder)
            if backend.stop_task(job.task):
                result = read_result(folder)
                said = "cancelled"
                if result is not None and result.last_checkpoint:
                    said += f" at step {result.last_checkpoint}: `cove finetune resume {job.name}` goes on from there"
                finetunes.observe(db=self.db, name=job.name, status=JobStatus.CANCELLED, message=said)
            return
        if job.task not in backend.tasks():
            self._launch(backend, job, folder)
        state = backend.run_task(self._task(backend, job))
        if state.phase in ("pending", "running"):
            status = JobStatus.RUNNING if state.phase == "running" else JobStatus.QUEUED
            if status != job.status or (state.message and status == JobStatus.QUEUED):
                finetunes.observe(db=self.db, name=job.name, status=status, message=state.message)
            return
        self._keep_log(backend, job, folder)
        self._end(job, state, folder)
        backend.stop_task(job.task)

    def _task(self, backend: Backend, job: Active) -> TaskSpec:
        paths = paths_for(self.settings, backend)
        python = "python" if backend.runs_images else self.python
        return task_of(job, settings=self.settings, paths=paths, python=python, image=self.settings.trainer_image)

    def _launch(self, backend: Backend, job: Active, folder: Path) -> None:
        token = finetunes.new_report_token(db=self.db, name=job.name)
        checkpoints = folder / finetuning.CHECKPOINTS_DIR
        resume = job.attempt > 1 and checkpoints.is_dir() and any(checkpoints.iterdir())
        plan = plan_of(job, settings=self.settings, paths=paths_for(self.settings, backend), token=token, resume=resume)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / finetuning.RESULT_FILE).unlink(missing_ok=True)  # a previous attempt's
        tmp = folder / f".{finetuning.PLAN_FILE}.tmp"
        tmp.write_text(plan.model_dump_json(indent=2))
        tmp.chmod(0o600)  # it holds the report token
        tmp.replace(folder / finetuning.PLAN_FILE)
        log.info("fine-tune %s: starting attempt %d%s", job.name, job.attempt, " (resuming)" if resume else "")

    def _keep_log(self, backend: Backend, job: Active, folder: Path) -> None:
        """The ended attempt's log, kept in the job's folder: the task (a pod, a process) is forgotten next. A log
        that cannot be written (a full disk) is logged, counted in ``logs_not_kept`` and left out (no partial file);
        the job ends as it would have, and the pass goes on."""
        lines = backend.task_logs(job.task, tail=KEPT_LOG_LINES)
        saved = finetunes.saved_log(self.settings.finetunes_dir, job.name, job.attempt)
        try:
            saved.write_text("".join(line + "\n" for line in lines))
        except OSError as exc:
            self.logs_not_kept += 1
            log.error(
                "fine-tune %s: the log of attempt %d cannot be kept at %s: %s", job.name, job.attempt, saved,
                exc.strerror or exc,
            )  # fmt: skip
            with contextlib.suppress(OSError):  # a partial log would read as the whole; and it frees the space
                saved.unlink(missing_ok=True)

    def _end(self, job: Active, state: TaskState, folder: Path) -> None:
        result = read_result(folder)
        failure = state.message or "the training process ended without a result"
        if state.log_tail and result is None:
            failure += ": " + " / ".join(line for line in state.log_tail[-3:] if line.strip())
        try:
            finetunes.finish(
                db=self.db, job=job, result=result, folder=folder, cache_dir=self.settings.models_dir, failure=failure
            )
        except CoveError as exc:  # the version could not be registered (a broken merge): the job says why
            finetunes.observe(
                db=self.db, name=job.name, status=JobStatus.FAILED, message=f"its model could not be registered: {exc}"
            )
