"""Deployments' and tasks' logs, read where they run: the local log files, or the newest pod on their cluster."""

from __future__ import annotations

from pathlib import Path

from studio.backends.clusters import Clusters, connect_cluster, make_backend
from studio.backends.local import log_tail
from studio.backends.logfiles import tail_lines
from studio.db import Database
from studio.sealing import studio_key
from studio.services import clusters, deployments
from studio.settings import Settings
from studio.values import DEFAULT_CLUSTER, Principal


class LogReader:
    """Reads deployments' logs (read-only: nothing is started or stopped), keeping one client per cluster for as
    long as it lives: the studio UI keeps one reader for its process, instead of connecting on every read."""

    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self._clusters = Clusters(lambda: make_backend(settings), connect=connect_cluster(settings))

    def read(self, name: str, *, actor: Principal, tail: int = 100) -> list[str]:
        """The last ``tail`` lines of the logs of a deployment ``actor`` may see."""
        cluster = deployments.get_deployment(db=self.db, actor=actor, name=name).cluster
        if cluster == DEFAULT_CLUSTER and self.settings.backend == "local":
            return log_tail(self.settings, name, tail=tail)  # the files, without adopting the controller's processes
        if cluster != DEFAULT_CLUSTER:
            self._clusters.update(clusters.connections(db=self.db, key=studio_key(self.settings)))
        return self._clusters.get(cluster).logs(name, tail=tail)

    def read_task(self, *, task: str, cluster: str, saved: Path, tail: int = 100) -> list[str]:
        """The last ``tail`` lines of a task's log: kept in ``saved`` once it ended, else read where it runs."""
        if saved.exists():
            return tail_lines(saved, tail)
        if cluster == DEFAULT_CLUSTER and self.settings.backend == "local":
            return tail_lines(self.settings.tasks_dir / task / "task.log", tail)  # files; nothing adopted
        if cluster != DEFAULT_CLUSTER:
            self._clusters.update(clusters.connections(db=self.db, key=studio_key(self.settings)))
        return self._clusters.get(cluster).task_logs(task, tail=tail)

    def close(self) -> None:
        self._clusters.close(stop_workloads=False)


def deployment_logs(*, settings: Settings, db: Database, actor: Principal, name: str, tail: int = 100) -> list[str]:
    """One read, for a command that reads once (``cove deploy logs``)."""
    reader = LogReader(settings=settings, db=db)
    try:
        return reader.read(name, actor=actor, tail=tail)
    finally:
        reader.close()
