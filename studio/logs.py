"""A deployment's logs, read where it runs: the local log files, or its newest pod on its cluster."""

from __future__ import annotations

from studio.backends.base import Backend
from studio.backends.clusters import connect_cluster, make_backend
from studio.backends.local import log_tail
from studio.db import Database
from studio.errors import NotFound
from studio.models import DEFAULT_CLUSTER
from studio.sealing import studio_key
from studio.services import clusters, deployments
from studio.settings import Settings


def deployment_logs(*, settings: Settings, db: Database, name: str, tail: int = 100) -> list[str]:
    """The last ``tail`` lines of the deployment's logs (read-only: nothing is started or stopped)."""
    cluster = deployments.get_deployment(db=db, name=name).cluster
    if cluster == DEFAULT_CLUSTER and settings.backend == "local":
        return log_tail(settings, name, tail=tail)  # the files, without adopting the controller's processes
    backend: Backend
    if cluster == DEFAULT_CLUSTER:
        backend = make_backend(settings)
    else:
        found = [c for c in clusters.connections(db=db, key=studio_key(settings)) if c.name == cluster]
        if not found:
            raise NotFound(f"deployment {name!r} runs on cluster {cluster!r}, which is not registered")
        backend = connect_cluster(settings)(found[0])
    try:
        return backend.logs(name, tail=tail)
    finally:
        backend.close(stop_workloads=False)
