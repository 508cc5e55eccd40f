"""``client.evaluations``: evaluate a model version on a dataset, follow the run, read its scores and examples."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cove.jobs import follow
from studio.models import EvaluationPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/evaluations"


class Evaluations:
    def __init__(self, client: Client) -> None:
        self.client = client

    def create(
        self, model: str, dataset: str, deployment: str, scorers: list[dict[str, Any]], **fields: Any
    ) -> EvaluationPublic:
        """Evaluate ``model`` (newest version unless ``model_version``), served by ``deployment``, on ``dataset``
        (newest unless ``dataset_version``; ``split`` "eval" unless given) with ``scorers``
        (``{"kind": "exact_match"}``, ``{"kind": "regex", "pattern": …}``, ``{"kind": "json_schema", "json_schema":
        {…}}``); ``judge`` and ``against`` add pairwise judgement; ``limit``. Answers at once; ``wait`` follows it."""
        body = {"model": model, "dataset": dataset, "deployment": deployment, "scorers": scorers, **fields}
        found: EvaluationPublic = self.client.call(EvaluationPublic, "POST", PATH, body=body)
        return found

    def get(self, evaluation_id: int) -> EvaluationPublic:
        """One evaluation with every example."""
        found: EvaluationPublic = self.client.call(EvaluationPublic, "GET", f"{PATH}/{evaluation_id}")
        return found

    def list(self, *, model: str | None = None, version: int | None = None) -> Iterator[EvaluationPublic]:
        """The evaluations the caller may see, newest first, without examples."""
        params: dict[str, Any] = {k: v for k, v in {"model": model, "version": version}.items() if v is not None}
        return self.client.pages(EvaluationPublic, PATH, **params)

    def delete(self, evaluation_id: int) -> None:
        self.client.request("DELETE", f"{PATH}/{evaluation_id}")

    def wait(
        self,
        evaluation_id: int,
        *,
        timeout: float = 3600,
        poll: float = 0.5,
        on_progress: Callable[[EvaluationPublic], None] | None = None,
    ) -> EvaluationPublic:
        """Follow an evaluation until it ends and return it with its examples; CoveError with its message when it
        failed, or after ``timeout`` seconds. ``on_progress`` sees each change of status or count."""
        return follow(
            lambda: self.get(evaluation_id),
            what=f"evaluation {evaluation_id}",
            seen=lambda found: f"{found.status} {found.done}/{found.total}",
            failed_hint="check the deployments answer through the gateway, then run it again",
            late_hint="wait longer: `cove eval show ID` follows it; is the server running (`cove up`)?",
            timeout=timeout,
            poll=poll,
            on_progress=on_progress,
        )
