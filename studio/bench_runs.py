"""The controller's part for benchmark runs: each pass, every queued run is started as a task on the control
plane's own cluster (``python -m studio.bench PLAN``), a running one's progress recorded, an ended one's result
stored.

A run through the gateway (``settings.report_url``: the address tasks reach the control plane at) asks with a key
made for the run's owner, limited to the deployment and revoked when the run ends (``studio.task_runs``); a run
straight to one replica waits until that replica is ready and then sends to its endpoint. The plan and what the run
leaves (progress.json, result.json) lie in ``settings.models_dir/benchmarks/<id>``.
"""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

from studio import bench
from studio.backends.base import Backend, TaskSpec
from studio.benchmark import BenchPlan, BenchProgress, BenchResult
from studio.db import Database
from studio.errors import CoveError
from studio.jobs import paths_for
from studio.services import benchmarks
from studio.services.benchmarks import Active
from studio.settings import Settings
from studio.task_runs import owner_key, read, revoke_owner_key, task_spec, write_plan
from studio.values import DEFAULT_CLUSTER, JobStatus

log = logging.getLogger(__name__)


def folder_of(settings: Settings, run_id: int) -> Path:
    return settings.models_dir / "benchmarks" / str(run_id)


def plan_of(run: Active, *, settings: Settings, tokenizer: str | None, key: str | None) -> BenchPlan:
    """The run's plan: through the gateway as the deployment's name, or to its replica as the runtime's model."""
    if run.target == "replica":
        assert run.replica_url is not None
        url, model = run.replica_url, run.replica_model
    else:
        url, model = settings.report_url.rstrip("/") + "/v1", run.deployment
    return BenchPlan(
        **run.spec.model_dump(), url=url, model=model, tokenizer=tokenizer, api_key=key, api_key_env="COVE_BENCH_KEY"
    )


class BenchmarkRunner:
    """Runs benchmark runs on the controller's behalf (see the module docstring)."""

    def __init__(self, *, db: Database, settings: Settings, python: str = sys.executable) -> None:
        self.db, self.settings, self.python = db, settings, python

    def reconcile(self, backend_of: dict[str, Backend]) -> set[str]:
        """One pass over the unfinished runs; returns the tasks that belong to one."""
        backend = backend_of.get(DEFAULT_CLUSTER)
        if backend is None:
            return set()
        owned = set()
        for run in benchmarks.active(db=self.db):
            owned.add(run.task)
            try:
                self._one(backend, run)
            except CoveError as exc:
                log.warning("benchmark run %d: %s", run.id, exc)
                self._end(run, None, f"it could not run: {exc}")
        return owned

    def _one(self, backend: Backend, run: Active) -> None:
        folder = folder_of(self.settings, run.id)
        if run.status == JobStatus.QUEUED or run.task not in backend.tasks():
            if run.target == "replica" and run.replica_url is None:
                return  # queued until the replica is ready
            self._launch(backend, run, folder)
        state = backend.run_task(self._task(backend, run))
        if state.phase in ("pending", "running"):
            progress = read(folder / bench.PROGRESS_FILE, BenchProgress)
            if progress is not None:
                benchmarks.progressed(db=self.db, run_id=run.id, progress=progress)
            return
        result = read(folder / bench.RESULT_FILE, BenchResult)
        failure = state.message or "the benchmark process ended without a result"
        if state.log_tail and result is None:
            failure += ": " + " / ".join(line for line in state.log_tail[-3:] if line.strip())
        self._end(run, result, failure)
        backend.stop_task(run.task)

    def _task(self, backend: Backend, run: Active) -> TaskSpec:
        return task_spec(
            self.settings,
            backend,
            name=run.task,
            module="studio.bench",
            folder=folder_of(self.settings, run.id),
            plan_file=bench.PLAN_FILE,
            python=self.python,
        )

    def _launch(self, backend: Backend, run: Active, folder: Path) -> None:
        if run.key_name:  # a previous launch's
            self._revoke(run)
        name, key = "", None
        if run.target == "gateway":
            name = f"bench-{run.id}-{secrets.token_hex(4)}"
            key = owner_key(self.db, owner=run.owner, name=name, deployments=[run.deployment])
        paths = paths_for(self.settings, backend)
        tokenizer = str(paths.of(Path(run.tokenizer))) if run.tokenizer else None
        plan = plan_of(run, settings=self.settings, tokenizer=tokenizer, key=key)
        write_plan(folder, bench.PLAN_FILE, plan, stale=(bench.RESULT_FILE, bench.PROGRESS_FILE))
        benchmarks.started(db=self.db, run_id=run.id, key_name=name)
        log.info("benchmark run %d: started", run.id)

    def _revoke(self, run: Active) -> None:
        revoke_owner_key(self.db, owner=run.owner, name=benchmarks.key_of(db=self.db, run_id=run.id))

    def _end(self, run: Active, result: BenchResult | None, failure: str) -> None:
        benchmarks.finish(db=self.db, run_id=run.id, result=result, failure=failure)
        self._revoke(run)
