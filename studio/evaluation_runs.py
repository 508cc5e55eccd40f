"""The controller's part for evaluations: each pass, every queued evaluation is started as a task on the control
plane's own cluster (``python -m studio.evaluator PLAN``), a running one's progress recorded, an ended one's result
stored.

A run asks the models through the gateway (``settings.report_url``: the address tasks reach the control plane at)
with a key made for the evaluation's owner, limited to the deployments it names and expiring in a day; the key is
revoked when the run ends, so a run acts exactly as its owner may. The plan and what the run leaves (progress.json,
result.json) lie in ``settings.evaluations_dir/<id>``, beside the model cache (the models claim on Kubernetes).
"""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

from studio import scoring
from studio.backends.base import Backend, TaskSpec
from studio.db import Database
from studio.errors import CoveError
from studio.jobs import Paths, paths_for
from studio.scoring import Endpoint, EvalPlan, EvalResult, HeldOut, Progress
from studio.services import evaluations
from studio.services.evaluations import Active
from studio.settings import Settings
from studio.task_runs import owner_key, read, revoke_owner_key, task_spec, write_plan
from studio.values import DEFAULT_CLUSTER, JobStatus

log = logging.getLogger(__name__)


def folder_of(settings: Settings, evaluation_id: int) -> Path:
    return settings.models_dir / "evaluations" / str(evaluation_id)


def plan_of(run: Active, *, settings: Settings, paths: Paths, key: str) -> EvalPlan:
    """The run's plan, in the task's paths. Pure."""
    root = Path(run.dataset.path)
    split = "train" if run.split == evaluations.HELD_OUT and run.held_out else run.split
    if run.split == evaluations.HELD_OUT and not run.held_out:
        split = "eval"  # the dataset's own eval split is what the trainer held out
    gateway = settings.report_url.rstrip("/") + "/v1"

    def endpoint(name: str | None) -> Endpoint | None:
        return Endpoint(base_url=gateway, model=name, key=key) if name else None

    return EvalPlan(
        evaluation=run.id,
        builder=run.dataset.builder,
        files=[paths.of(root / f) for f in run.dataset.files.get(split, [])],
        format=run.dataset.format,
        columns=run.dataset.columns,
        held_out=HeldOut(fraction=run.held_out[0], seed=run.held_out[1]) if run.held_out else None,
        limit=run.limit,
        candidate=Endpoint(base_url=gateway, model=run.deployment, key=key),
        scorers=run.scorers,
        judge=endpoint(run.judge),
        against=endpoint(run.against),
        output_dir=paths.of(folder_of(settings, run.id)),
    )


class EvaluationRunner:
    """Runs evaluations on the controller's behalf (see the module docstring)."""

    def __init__(self, *, db: Database, settings: Settings, python: str = sys.executable) -> None:
        self.db, self.settings, self.python = db, settings, python

    def reconcile(self, backend_of: dict[str, Backend]) -> set[str]:
        """One pass over the unfinished evaluations; returns the tasks that belong to one."""
        backend = backend_of.get(DEFAULT_CLUSTER)
        if backend is None:
            return set()
        owned = set()
        for run in evaluations.active(db=self.db):
            owned.add(run.task)
            try:
                self._one(backend, run)
            except CoveError as exc:
                log.warning("evaluation %d: %s", run.id, exc)
                self._end(run, None, f"it could not run: {exc}")
        return owned

    def _one(self, backend: Backend, run: Active) -> None:
        folder = folder_of(self.settings, run.id)
        if run.status == JobStatus.QUEUED or run.task not in backend.tasks():
            if run.status == JobStatus.RUNNING:  # its task is gone (a restart lost it): try again, afresh
                log.info("evaluation %d: its task is gone; starting it again", run.id)
            self._launch(backend, run, folder)
        state = backend.run_task(self._task(backend, run))
        if state.phase in ("pending", "running"):
            progress = read(folder / scoring.PROGRESS_FILE, Progress)
            if progress is not None:
                evaluations.progressed(db=self.db, evaluation_id=run.id, progress=progress)
            return
        result = read(folder / scoring.RESULT_FILE, EvalResult)
        failure = state.message or "the evaluation process ended without a result"
        if state.log_tail and result is None:
            failure += ": " + " / ".join(line for line in state.log_tail[-3:] if line.strip())
        self._end(run, result, failure)
        backend.stop_task(run.task)

    def _task(self, backend: Backend, run: Active) -> TaskSpec:
        folder = folder_of(self.settings, run.id)
        return task_spec(
            self.settings,
            backend,
            name=run.task,
            module="studio.evaluator",
            folder=folder,
            plan_file=scoring.PLAN_FILE,
            python=self.python,
        )

    def _launch(self, backend: Backend, run: Active, folder: Path) -> None:
        if run.key_name:  # a previous launch's
            self._revoke(run)
        name = f"eval-{run.id}-{secrets.token_hex(4)}"
        deployments = [d for d in (run.deployment, run.judge, run.against) if d]
        key = owner_key(self.db, owner=run.owner, name=name, deployments=deployments)
        plan = plan_of(run, settings=self.settings, paths=paths_for(self.settings, backend), key=key)
        write_plan(folder, scoring.PLAN_FILE, plan, stale=(scoring.RESULT_FILE, scoring.PROGRESS_FILE))
        evaluations.started(db=self.db, evaluation_id=run.id, key_name=name)
        log.info("evaluation %d: started", run.id)

    def _revoke(self, run: Active) -> None:
        """The key the run asked with (named at its launch) stops working."""
        revoke_owner_key(self.db, owner=run.owner, name=evaluations.key_of(db=self.db, evaluation_id=run.id))

    def _end(self, run: Active, result: EvalResult | None, failure: str) -> None:
        evaluations.finish(db=self.db, evaluation_id=run.id, result=result, failure=failure)
        self._revoke(run)
