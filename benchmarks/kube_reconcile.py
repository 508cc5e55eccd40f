"""What one controller pass costs on Kubernetes: wall time and API requests per pass with N Ready deployments, in
steady state (nothing to change), against the Kubernetes API emulator the tests use (kmock, tests/fakes/kubeapi.py)
through the official client. The emulator answers in well under a millisecond of network, so the time is the
client's and the controller's own; a real API server adds its round trips (requests × RTT).

    .venv/bin/python benchmarks/kube_reconcile.py [--deployments 20 100] [--passes 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fakes: the emulator and the model stub

from studio.backends.kubernetes.backend import KubernetesBackend  # noqa: E402
from studio.backends.kubernetes.client import KubeClient, connect  # noqa: E402
from studio.bootstrap import open_studio  # noqa: E402
from studio.controller import Controller  # noqa: E402
from studio.models import DeploymentCreate, ModelCreate, Resources  # noqa: E402
from studio.services import deployments, models  # noqa: E402
from studio.settings import Settings  # noqa: E402
from tests.fakes import kubeapi  # noqa: E402
from tests.integration.conftest import write_stub_model  # noqa: E402

POOL = {"name": "gpu", "purpose": "serve", "sharing": "whole", "gpuCount": 4096, "cpuCores": 65536,
        "memoryMib": 1 << 30, "nodeSelector": {"cove.dev/pool": "gpu"}}  # fmt: skip


@contextmanager
def counted() -> Iterator[list[int]]:
    """Counts the requests the emulator serves."""
    seen = [0]
    original = kubeapi.KubeAPI._handle

    async def handle(self: kubeapi.KubeAPI, request: object) -> object:
        seen[0] += 1
        return await original(self, request)

    kubeapi.KubeAPI._handle = handle  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        kubeapi.KubeAPI._handle = original  # type: ignore[method-assign]


def run(n: int, passes: int, home: Path) -> tuple[float, float, float]:
    settings = Settings(home=home, backend="kubernetes", pools=[POOL], kube_namespace="cove", demo=False)
    db = open_studio(settings)
    folder = write_stub_model(home / "stub")
    models.add_model(db=db, data=ModelCreate(name="qwen", source=str(folder)), cache_dir=settings.models_dir)
    for i in range(n):
        data = DeploymentCreate(name=f"chat-{i}", model="qwen", pool="gpu", image="vllm",
                                resources=Resources(cpu=4, memory_mib=16384, gpus=1))  # fmt: skip
        deployments.create_deployment(db=db, data=data)
    with counted() as requests, kubeapi.Cluster() as cluster:
        backend = KubernetesBackend(settings, KubeClient(connect(host=cluster.url), "cove"))
        controller = Controller(db=db, backend=backend, settings=settings)
        controller.reconcile()
        cluster.settle("run")
        controller.reconcile()  # every deployment Ready, its status recorded
        times = []
        before = requests[0]
        for _ in range(passes):
            start = time.perf_counter()
            controller.reconcile()
            times.append(time.perf_counter() - start)
        per_pass = (requests[0] - before) / passes
        controller.stop(stop_workloads=False)
    db.dispose()
    return statistics.median(times), max(times), per_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, nargs="+", default=[20, 100])  # the emulator tires past 150
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'deployments':>12} {'pass p50 ms':>12} {'pass max ms':>12} {'requests/pass':>14} {'ms/deployment':>14}")
    for n in args.deployments:
        with tempfile.TemporaryDirectory() as tmp:
            median, worst, per_pass = run(n, args.passes, Path(tmp))
        print(f"{n:>12} {median * 1000:>12.1f} {worst * 1000:>12.1f} {per_pass:>14.1f} {median * 1000 / n:>14.2f}")


if __name__ == "__main__":
    main()
