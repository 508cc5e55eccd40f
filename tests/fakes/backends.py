"""A Backend whose replicas are ready the moment they are asked for, and whose tasks do what the test says: for
controller tests about decisions (status, events, autoscaling, fine-tune jobs) rather than processes."""

from __future__ import annotations

from studio.backends.base import BuildSpec, BuildState, ReplicaStatus, TaskSpec, TaskState, WorkloadSpec, WorkloadStatus
from studio.values import PoolBase


class InstantBackend:
    autoscales = False
    runs_images = False

    def __init__(self) -> None:
        self.specs: dict[str, WorkloadSpec] = {}
        self.task_specs: dict[str, TaskSpec] = {}
        self.task_states: dict[str, TaskState] = {}  # a test sets how a task goes; "running" until it does

    def observe(self) -> None:
        pass

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        self.specs[spec.name] = spec
        replicas = tuple(ReplicaStatus(i, "ready", f"http://127.0.0.1:{20000 + i}") for i in range(spec.replicas))
        return WorkloadStatus(spec.name, replicas, upstream_model=spec.name)

    def delete(self, name: str) -> bool:
        self.specs.pop(name, None)
        return True

    def names(self) -> set[str]:
        return set(self.specs)

    def logs(self, name: str, *, tail: int = 100) -> list[str]:
        return []

    def capacity(self) -> list[PoolBase]:
        return []

    def build(self, spec: BuildSpec) -> BuildState:
        return BuildState("unavailable", "no builds here")

    def run_task(self, spec: TaskSpec) -> TaskState:
        self.task_specs.setdefault(spec.name, spec)
        return self.task_states.get(spec.name, TaskState("running"))

    def stop_task(self, name: str) -> bool:
        self.task_specs.pop(name, None)
        self.task_states.pop(name, None)
        return True

    def tasks(self) -> set[str]:
        return set(self.task_specs)

    def task_logs(self, name: str, *, tail: int = 100) -> list[str]:
        return []

    def close(self, *, stop_workloads: bool) -> None:
        self.specs.clear()
