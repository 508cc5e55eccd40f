"""``client.benchmarks``: benchmark a deployment on the server, follow the run, read and compare results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cove.jobs import follow
from studio.bench_results import Difference
from studio.benchmark import BenchSpec
from studio.models import BenchmarkRunPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/benchmarks"
Differences = list[Difference]  # `list` is a method below


class Benchmarks:
    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, deployment: str, spec: BenchSpec | dict[str, Any], **fields: Any) -> BenchmarkRunPublic:
        """Benchmark ``deployment`` with ``spec`` (a ``BenchSpec``: one step or an SLO sweep); ``target`` "gateway"
        (the default) or "replica" (with ``replica``, its index); ``dataset`` (and ``dataset_version``) for the
        workload's lengths; ``tokenizer=False`` to size prompts in words. Answers at once; ``wait`` follows it."""
        body = {
            "deployment": deployment,
            "spec": spec.model_dump(mode="json") if isinstance(spec, BenchSpec) else spec,
            **{k: v for k, v in fields.items() if v is not None},
        }
        found: BenchmarkRunPublic = self.client.call(BenchmarkRunPublic, "POST", PATH, body=body)
        return found

    def get(self, run_id: int) -> BenchmarkRunPublic:
        found: BenchmarkRunPublic = self.client.call(BenchmarkRunPublic, "GET", f"{PATH}/{run_id}")
        return found

    def list(
        self, *, deployment: str | None = None, model: str | None = None, version: int | None = None
    ) -> Iterator[BenchmarkRunPublic]:
        """The runs the caller may see, newest first."""
        params: dict[str, Any] = {"deployment": deployment, "model": model, "version": version}
        return self.client.pages(BenchmarkRunPublic, PATH, **{k: v for k, v in params.items() if v is not None})

    def compare(self, a: int, b: int) -> Differences:
        """Two ended runs figure by figure, with ``b − a``."""
        found: Differences = self.client.call(Differences, "GET", f"{PATH}/compare", params={"a": a, "b": b})
        return found

    def delete(self, run_id: int) -> None:
        self.client.request("DELETE", f"{PATH}/{run_id}")

    def wait(
        self,
        run_id: int,
        *,
        timeout: float = 3600,
        poll: float = 0.5,
        on_progress: Callable[[BenchmarkRunPublic], None] | None = None,
    ) -> BenchmarkRunPublic:
        """Follow a run until it ends and return it; CoveError with its message when it failed, or after
        ``timeout`` seconds. ``on_progress`` sees each change of status or progress line."""
        return follow(
            lambda: self.get(run_id),
            what=f"benchmark run {run_id}",
            seen=lambda found: f"{found.status} {found.progress}",
            failed_hint="check the deployment is ready and answers through the gateway, then run it again",
            late_hint="wait longer: `cove bench show ID` shows it; is the server running (`cove up`)?",
            timeout=timeout,
            poll=poll,
            on_progress=on_progress,
        )
