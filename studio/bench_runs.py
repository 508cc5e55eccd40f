"""The controller's part for benchmark runs: each pass, every queued run is started as a task on the control
plane's own cluster (``python -m studio.bench PLAN``), a running one's progress recorded, an ended one's result
stored.

A run through the gateway (``settings.report_url``: the address tasks reach the control plane at) asks with a key
made for the run's owner, limited to the deployment and revoked when the run ends (``studio.task_runs``); a run
straight to one replica waits until that replica is ready and then sends to its endpoint. The plan and what the run
leaves (progress.json, result.json) lie in ``settings.models_dir/benchmarks/<id>``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from studio import bench
from studio.backends.base import Backend
from studio.benchmark import BenchPlan, BenchProgress, BenchResult
from studio.jobs import paths_for
from studio.services import benchmarks
from studio.services.benchmarks import Active
from studio.settings import Settings
from studio.task_runs import TaskRunner


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


class BenchmarkRunner(TaskRunner[Active, BenchResult, BenchProgress]):
    """Runs benchmark runs on the controller's behalf (see the module docstring)."""

    noun, process, module, folder_name = "benchmark run", "benchmark", "studio.bench", "benchmarks"
    plan_file, progress_file, result_file = bench.PLAN_FILE, bench.PROGRESS_FILE, bench.RESULT_FILE
    progress_type, result_type = BenchProgress, BenchResult

    def active(self) -> list[Active]:
        return benchmarks.active(db=self.db)

    def waiting(self, run: Active) -> bool:
        return run.target == "replica" and run.replica_url is None  # queued until the replica is ready

    def key_for(self, run: Active) -> tuple[str, list[str]] | None:
        if run.target != "gateway":
            return None  # straight to a replica, which asks for no key of Cove's
        return f"bench-{run.id}-{secrets.token_hex(4)}", [run.deployment]

    def plan(self, run: Active, backend: Backend, key: str | None) -> BenchPlan:
        paths = paths_for(self.settings, backend)
        tokenizer = str(paths.of(Path(run.tokenizer))) if run.tokenizer else None
        return plan_of(run, settings=self.settings, tokenizer=tokenizer, key=key)

    def started(self, run: Active, key_name: str) -> None:
        benchmarks.started(db=self.db, run_id=run.id, key_name=key_name)

    def key_of(self, run: Active) -> str:
        return benchmarks.key_of(db=self.db, run_id=run.id)

    def progressed(self, run: Active, progress: BenchProgress) -> None:
        benchmarks.progressed(db=self.db, run_id=run.id, progress=progress)

    def finish(self, run: Active, result: BenchResult | None, failure: str) -> None:
        benchmarks.finish(db=self.db, run_id=run.id, result=result, failure=failure)
