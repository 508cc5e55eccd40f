"""The Backend protocol: the few verbs the controller uses to make desired state real.

A backend runs *workloads* (the replicas of one deployment) from a ``WorkloadSpec`` and reports what it observes
as a ``WorkloadStatus``. ``apply`` is declarative and idempotent: called on every reconcile pass, it starts what is
missing, replaces what changed, stops what is surplus, and returns the status. State worth keeping across a restart
(pids and ports locally; the cluster itself on Kubernetes) is the backend's own business, so a restarted controller
adopts running replicas instead of starting them twice. Only the controller calls ``apply``/``delete``/``build``;
``logs`` and ``capacity`` are read-only and safe to call from anywhere.

A backend runs one cluster: the control plane's own (``COVE_BACKEND``), or a registered one (``Connection``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from studio.values import Autoscale, PoolBase, Resources, RuntimeKind

Phase = Literal["pending", "starting", "ready", "backoff", "terminating"]


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything a backend needs to run one deployment's replicas; built by a pure function from DB rows."""

    name: str
    runtime: RuntimeKind
    model: str  # what the runtime loads: a Hub repo id (resolved in the model cache) or a folder
    model_revision: str | None
    image: str  # container reference with tag, for backends that run containers
    model_path: str = ""  # the model's folder on this machine (a snapshot in the model cache, or a local folder)
    health_path: str = "/health"
    local_command: tuple[str, ...] | None = None  # custom images: see studio.runtimes.PLACEHOLDERS
    args: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    replicas: int = 1
    pool: str = "local"
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()  # the pool's, for Kubernetes
    autoscale: Autoscale | None = None  # for backends whose cluster scales (a HorizontalPodAutoscaler)
    adapter: str = ""  # a LoRA adapter's folder served on ``model`` (its base), for runtimes that load adapters
    adapter_rank: int = 0
    embeds: bool = False  # the model is an encoder without a generation head: it answers embeddings only

    @property
    def fingerprint(self) -> str:
        """Changes when what a replica runs changes (not its count or scaling): replicas with another fingerprint
        are replaced."""
        body = asdict(self)
        for key in ("replicas", "autoscale"):
            body.pop(key)
        if not self.embeds:
            body.pop("embeds")  # fields added with their default keep running replicas' fingerprints as they were
        body["resources"] = self.resources.model_dump()
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ReplicaStatus:
    index: int
    phase: Phase
    endpoint: str | None = None  # base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:41235
    restarts: int = 0
    failures: int = 0  # consecutive failed starts (crashes before ready); reset once ready
    message: str = ""  # the last exit or probe failure, in words
    log_tail: tuple[str, ...] = ()  # last lines of the replica's log when it last failed
    gpus: tuple[int, ...] = ()  # the pool's GPUs (0 … count − 1) it holds, where the backend placed it itself


@dataclass(frozen=True)
class WorkloadStatus:
    name: str
    replicas: tuple[ReplicaStatus, ...] = ()
    upstream_model: str = ""  # the model name the runtime expects in requests
    unavailable: str = ""  # the runtime cannot run on this backend at all, and why
    waiting: str = ""  # nothing is started yet, and why (an image still being built)
    scaled_to: int | None = None  # the replica count the cluster's autoscaler chose, where it has one

    @property
    def ready(self) -> tuple[ReplicaStatus, ...]:
        return tuple(r for r in self.replicas if r.phase == "ready")


@dataclass(frozen=True)
class Connection:
    """How to reach a registered cluster: its kubeconfig's text, the context to use, and Cove's namespace there."""

    name: str
    kubeconfig: str = field(repr=False)
    context: str = ""
    namespace: str = "cove"
    problem: str = ""  # why it cannot be used (its kubeconfig cannot be unsealed), if so

    @property
    def fingerprint(self) -> str:
        body = f"{self.kubeconfig}\0{self.context}\0{self.namespace}"
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuildSpec:
    """An image to build from its Dockerfile and push to ``destination`` (reference with tag)."""

    name: str  # "name:version", as users know the image
    dockerfile: str
    destination: str
    attempt: int = 1  # a rebuild is a new build, not the old one's result


@dataclass(frozen=True)
class BuildState:
    phase: Literal["pending", "building", "succeeded", "failed", "unavailable"]
    message: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """A run-to-completion process (a fine-tune): the program, where it runs and what it may use. Its folder
    (``workdir``) holds what it is given and what it leaves; on Kubernetes it lies on the models claim."""

    name: str
    command: tuple[str, ...]  # the program and its arguments (run in ``image`` on backends that run images)
    workdir: str
    image: str = ""
    env: tuple[tuple[str, str], ...] = ()
    resources: Resources = field(default_factory=Resources)
    pool: str = "local"
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    queue: str = ""  # the Kueue LocalQueue a Job is submitted to, so it waits for room ("": none)


@dataclass(frozen=True)
class TaskState:
    phase: Literal["pending", "running", "succeeded", "failed"]
    message: str = ""  # why it is pending (queued), or how it ended
    exit_code: int | None = None
    log_tail: tuple[str, ...] = ()  # its last log lines, when it failed


class Backend(Protocol):
    autoscales: bool  # the cluster scales autoscaled workloads itself (the controller leaves them alone)
    runs_images: bool  # replicas run the image's container (deployments wait for an image that is being built)

    def observe(self) -> None:
        """Read the cluster once for the pass that follows (``apply``/``status``/``names`` answer from it)."""
        ...

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        """Converge the workload named ``spec.name`` towards ``spec``; return what is observed now."""
        ...

    def delete(self, name: str) -> bool:
        """Stop and remove the workload; True once nothing of it is left."""
        ...

    def names(self) -> set[str]:
        """Workloads this backend is running, including ones no deployment asks for any more."""
        ...

    def logs(self, name: str, *, tail: int = 100) -> list[str]: ...

    def capacity(self) -> list[PoolBase]:
        """The pools this backend finds by itself, with their capacity (``values.CAPACITY_FIELDS``) and placement."""
        ...

    def build(self, spec: BuildSpec) -> BuildState:
        """Start building the image if no build of it exists; report how the build goes. Idempotent."""
        ...

    def run_task(self, spec: TaskSpec) -> TaskState:
        """Start the task if it was never started; report how it goes. Idempotent: a finished task is not run
        again (its state is kept until ``stop_task``)."""
        ...

    def stop_task(self, name: str) -> bool:
        """Stop the task if it runs and forget it; True once nothing of it is left."""
        ...

    def tasks(self) -> set[str]:
        """Tasks this backend knows, running or finished."""
        ...

    def task_logs(self, name: str, *, tail: int = 100) -> list[str]: ...

    def close(self, *, stop_workloads: bool) -> None:
        """Release the backend; with ``stop_workloads`` also stop every replica it runs."""
        ...
