"""The controller's part for evaluations: each pass, every queued evaluation is started as a task on the control
plane's own cluster (``python -m studio.evaluator PLAN``), a running one's progress recorded, an ended one's result
stored.

A run asks the models through the gateway (``settings.report_url``: the address tasks reach the control plane at)
with a key made for the evaluation's owner, limited to the deployments it names and expiring in a day; the key is
revoked when the run ends, so a run acts exactly as its owner may. The plan and what the run leaves (progress.json,
result.json) lie in ``settings.evaluations_dir/<id>``, beside the model cache (the models claim on Kubernetes).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from studio import scoring
from studio.backends.base import Backend
from studio.jobs import Paths, paths_for
from studio.scoring import Endpoint, EvalPlan, EvalResult, HeldOut, Progress
from studio.services import evaluations
from studio.services.evaluations import Active
from studio.settings import Settings
from studio.task_runs import TaskRunner

FOLDER = "evaluations"  # under settings.models_dir, a folder per run


def folder_of(settings: Settings, evaluation_id: int) -> Path:
    return settings.models_dir / FOLDER / str(evaluation_id)


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


class EvaluationRunner(TaskRunner[Active, EvalResult, Progress]):
    """Runs evaluations on the controller's behalf (see the module docstring)."""

    noun, process, module, folder_name = "evaluation", "evaluation", "studio.evaluator", FOLDER
    plan_file, progress_file, result_file = scoring.PLAN_FILE, scoring.PROGRESS_FILE, scoring.RESULT_FILE
    progress_type, result_type = Progress, EvalResult

    def active(self) -> list[Active]:
        return evaluations.active(db=self.db)

    def key_for(self, run: Active) -> tuple[str, list[str]]:
        return f"eval-{run.id}-{secrets.token_hex(4)}", [d for d in (run.deployment, run.judge, run.against) if d]

    def plan(self, run: Active, backend: Backend, key: str | None) -> EvalPlan:
        assert key is not None  # an evaluation always asks through the gateway
        return plan_of(run, settings=self.settings, paths=paths_for(self.settings, backend), key=key)

    def started(self, run: Active, key_name: str) -> None:
        evaluations.started(db=self.db, evaluation_id=run.id, key_name=key_name)

    def key_of(self, run: Active) -> str:
        return evaluations.key_of(db=self.db, evaluation_id=run.id)

    def progressed(self, run: Active, progress: Progress) -> None:
        evaluations.progressed(db=self.db, evaluation_id=run.id, progress=progress)

    def finish(self, run: Active, result: EvalResult | None, failure: str) -> None:
        evaluations.finish(db=self.db, evaluation_id=run.id, result=result, failure=failure)
