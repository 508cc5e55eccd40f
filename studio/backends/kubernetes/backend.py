"""KubernetesBackend: a Cove deployment is a Deployment (+ Service, + PodDisruptionBudget with several replicas, +
HorizontalPodAutoscaler with ``COVE_AUTOSCALER=hpa``) in the cluster; its replicas are its pods. Everything is built
by ``manifests`` and sent through ``client``.

``apply`` is called on every reconcile pass, so it reads before it writes: the Deployment is created when missing
and patched only when the spec's fingerprint or the replica count changed (with an HPA the count is the HPA's).
The reads come from ``observe``, which the controller calls once a pass: a few lists of the namespace (Deployments,
pods, disruption budgets, and HPAs when the cluster scales) however many deployments there are. Without it each
``apply`` reads its own objects.
Workloads outlive the control plane: closing the backend leaves them running; only ``delete`` removes them.

Tasks (fine-tunes) are Jobs in the namespace (``manifests.task``: its docstring is the contract of paths, mounts and
environment a ``TaskSpec`` keeps), submitted to a Kueue LocalQueue when the spec names one; ``run_task`` creates the
Job once and reports it as ``conditions.task_state`` reads it, from the same pass's view as deployments.

Images registered with a Dockerfile are built by a Job in ``COVE_BUILD_NAMESPACE`` (Kaniko needs root, so not next
to the restricted workloads): Kaniko builds without credentials, then a container of its own pushes the result to
the image's reference; the controller holds deployments of such an image back until it is pushed (``runs_images``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from studio.backends.base import BuildSpec, BuildState, Connection, TaskSpec, TaskState, WorkloadSpec, WorkloadStatus
from studio.backends.kubernetes import manifests
from studio.backends.kubernetes.client import KubeClient
from studio.backends.kubernetes.conditions import build_state, failed_step, replica_status, task_state
from studio.errors import Conflict, InvalidSpec, NotFound
from studio.names import outside_registry
from studio.runtimes import CONTAINER_PORT, container_launch, upstream_key
from studio.sealing import studio_key
from studio.settings import Settings
from studio.values import PoolBase

POOL_LABEL = "cove.dev/pool"  # nodes carry the name of their pool
GPU_PRODUCT = "nvidia.com/gpu.product"  # set by NVIDIA's GPU feature discovery
GPU_MEMORY = "nvidia.com/gpu.memory"  # MiB per GPU, also from feature discovery
GPU_COUNT = "nvidia.com/gpu.count"  # physical GPUs (allocatable nvidia.com/gpu counts HAMi's virtual ones)


@dataclass
class _Seen:
    """One read of the namespace: Cove's objects by kind and name, their pods by deployment and by task, and the
    task Jobs (read on first use in the pass: a pass without tasks does not list Jobs)."""

    objects: dict[str, dict[str, dict[str, Any]]]
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    task_pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] | None = None


def connect_cluster(settings: Settings, connection: Connection) -> KubernetesBackend:
    """The backend of a registered cluster, from its kubeconfig's text."""
    import yaml

    from studio.backends.kubernetes.client import connect

    api = connect(config_dict=yaml.safe_load(connection.kubeconfig), context=connection.context)
    return KubernetesBackend(settings, KubeClient(api, connection.namespace))


class KubernetesBackend:
    def __init__(self, settings: Settings, kube: KubeClient) -> None:
        self.settings, self.kube = settings, kube
        self.builds = kube.in_namespace(settings.build_namespace)
        self.target = manifests.Target(
            namespace=kube.namespace, models_pvc=settings.models_pvc, datasets_pvc=settings.datasets_pvc,
            start_timeout_s=settings.runtime_start_timeout_s, release=settings.release,
        )  # fmt: skip
        self.autoscales = settings.autoscaler == "hpa"
        self.runs_images = True
        self._upstream: dict[str, str] = {}
        self._seen: _Seen | None = None
        self._ended: dict[str, tuple[str, TaskState]] = {}  # a finished task's state by name, with its Job's uid

    def observe(self) -> None:
        """Read what Cove runs in the namespace, for this pass's ``apply``/``status``/``names``."""
        mine = {
            "app.kubernetes.io/managed-by": manifests.MANAGED_BY,
            "app.kubernetes.io/component": manifests.COMPONENT,
        }
        kinds = ["Deployment", "PodDisruptionBudget"] + (["HorizontalPodAutoscaler"] if self.autoscales else [])
        objects = {kind: self._own(self.kube.find(kind, mine)) for kind in kinds}
        by_component: dict[str, dict[str, list[dict[str, Any]]]] = {manifests.COMPONENT: {}, manifests.TASK: {}}
        for pod in self.kube.pods({"app.kubernetes.io/managed-by": manifests.MANAGED_BY}):
            labels = (pod.get("metadata") or {}).get("labels") or {}
            found = by_component.get(labels.get("app.kubernetes.io/component", ""))
            if found is not None:
                found.setdefault(labels.get("app.kubernetes.io/instance", ""), []).append(pod)
        self._seen = _Seen(objects, by_component[manifests.COMPONENT], by_component[manifests.TASK])

    def _own(self, found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """This release's objects by name; another release's in the namespace are not ours to change or clean up."""
        return {o["metadata"]["name"]: o for o in found if manifests.owned_by(o, self.settings.release)}

    def _live(self, kind: str, name: str) -> dict[str, Any] | None:
        if self._seen is not None and kind in self._seen.objects:
            return self._seen.objects[kind].get(name)
        return self.kube.get(kind, name)

    def _wrote(self, kind: str, obj: dict[str, Any] | None, name: str = "") -> None:
        """Keep this pass's view in step with a write (``obj`` None: deleted)."""
        if self._seen is not None and kind in self._seen.objects:
            if obj is None:
                self._seen.objects[kind].pop(name, None)
            else:
                self._seen.objects[kind][obj["metadata"]["name"]] = obj

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        launch = container_launch(spec, local_models_dir=self.settings.models_dir)
        hpa = spec.autoscale if self.autoscales else None
        live = self._live("Deployment", spec.name)
        # with an HPA the replica count is the HPA's: set once, at creation, and never patched back; except the step
        # between 0 and 1 of a deployment that scales to zero, which the controller owns (an HPA cannot go below 1
        # without a feature gate, and leaves a Deployment at 0 replicas alone)
        asleep = spec.replicas == 0 or (live is not None and _replicas(live) == 0)
        replicas = None if hpa and live is not None and not asleep else spec.replicas
        wanted = manifests.model_server(spec, launch, self.target, replicas=replicas)
        if live is None:
            key = upstream_key(studio_key(self.settings), spec.name)  # the gateway derives the same
            self.kube.apply(manifests.secret(manifests.key_secret(spec.name), self.target, {"key": key}))
            self._wrote("Deployment", self._create(wanted))
            self.kube.apply(manifests.service(spec.name, self.target))
        elif _fingerprint(live) != spec.fingerprint or (replicas is not None and _replicas(live) != replicas):
            self._wrote("Deployment", self.kube.patch(wanted))
        self._autoscaler(spec)
        most = hpa.max_replicas if hpa else spec.replicas
        if most > 1 and self._live("PodDisruptionBudget", spec.name) is None:
            self._wrote("PodDisruptionBudget", self.kube.create(manifests.disruption_budget(spec.name, self.target)))
        self._upstream[spec.name] = launch.upstream_model
        status = self.status(spec.name)
        if hpa and live is not None:
            scaled_to = spec.replicas if asleep else _replicas(live)  # a count set this pass is the one to record
            status = WorkloadStatus(status.name, status.replicas, status.upstream_model, scaled_to=scaled_to)
        return status

    def _create(self, wanted: dict[str, Any]) -> dict[str, Any]:
        """Create a model server's Deployment; Conflict naming the release that holds the name, if another does."""
        try:
            return self.kube.create(wanted)
        except Conflict as exc:
            name = wanted["metadata"]["name"]
            holder = self.kube.get("Deployment", name)
            if holder is None or manifests.owned_by(holder, self.settings.release):
                raise
            other = holder["metadata"]["labels"][manifests.RELEASE_LABEL]
            raise Conflict(
                f"the Deployment {name} in namespace {self.kube.namespace} belongs to the Cove release {other!r}",
                hint="deploy under another name, or give each release a namespace of its own (COVE_KUBE_NAMESPACE)",
            ) from exc

    def _autoscaler(self, spec: WorkloadSpec) -> None:
        """The deployment's HPA as its autoscale bounds say: made, updated, or removed when autoscaling is off. With
        the controller scaling (COVE_AUTOSCALER=controller) HPAs are not looked for: one read less per pass."""
        if not self.autoscales:
            return
        live = self._live("HorizontalPodAutoscaler", spec.name)
        auto = spec.autoscale
        if auto is None:
            if live is not None:
                self.kube.delete("HorizontalPodAutoscaler", spec.name)
                self._wrote("HorizontalPodAutoscaler", None, spec.name)
            return
        wanted = manifests.autoscaler(
            spec.name, self.target, lo=max(auto.min_replicas, 1), hi=auto.max_replicas,
            inflight_per_replica=auto.target_inflight,
        )  # fmt: skip
        if live is None:
            self._wrote("HorizontalPodAutoscaler", self.kube.create(wanted))
        elif {k: (live.get("spec") or {}).get(k) for k in ("minReplicas", "maxReplicas", "metrics")} != {
            k: wanted["spec"][k] for k in ("minReplicas", "maxReplicas", "metrics")
        }:
            self._wrote("HorizontalPodAutoscaler", self.kube.patch(wanted))

    def status(self, name: str) -> WorkloadStatus:
        seen = self._seen
        pods = seen.pods.get(name, []) if seen is not None else self.kube.pods(manifests.selector(name))
        replicas = tuple(replica_status(pod, i, port=CONTAINER_PORT) for i, pod in enumerate(pods))
        return WorkloadStatus(name=name, replicas=replicas, upstream_model=self._upstream.get(name, ""))

    def build(self, spec: BuildSpec) -> BuildState:
        """Start a build Job for the image unless one exists (its name hashes the Dockerfile, the destination and
        the attempt; ``manifests.image_build``: Kaniko without credentials, then a push with them), then read how it
        goes; a failure carries the last 20 lines of the failed step's log. A finished build's Dockerfile Secret is
        removed (the Job stays a day, for its logs)."""
        if outside := outside_registry(spec.destination, self.settings.registry):  # registered before it was set
            return BuildState("failed", outside)
        body = f"{spec.destination}\0{spec.dockerfile}\0{spec.attempt}"
        digest = hashlib.sha256(body.encode()).hexdigest()[:10]
        name = f"build-{digest}"
        target = manifests.Target(namespace=self.builds.namespace, models_pvc="")
        job = self.builds.get("Job", name)
        if job is None:
            context, build = manifests.image_build(
                name, target, dockerfile=spec.dockerfile, destination=spec.destination,
                push_secret=self.settings.registry_secret, builder=self.settings.builder_image,
                pusher=self.settings.pusher_image,
            )  # fmt: skip
            self.builds.apply(context)  # left by an attempt that stopped before its Job: patched
            with contextlib.suppress(Conflict):  # made since the read above: the same Job (its name hashes it)
                self.builds.create(build)
            return BuildState("pending", f"build job {self.builds.namespace}/{name} created")
        pods = self.builds.pods(manifests.selector(name))
        pod = pods[-1] if pods else None
        state = build_state(job, pod)
        step = failed_step(pod)
        if state.phase == "failed" and pod is not None and step:  # the log of the step that failed
            try:
                tail = self.builds.logs(pod["metadata"]["name"], tail=20, container=step)
            except NotFound:  # the pod went while we looked: the state says why without its log
                tail = []
            state = BuildState("failed", "\n".join([state.message, *tail]))
        if state.phase in ("succeeded", "failed"):
            self.builds.delete("Secret", f"{name}-context")
        return state

    def delete(self, name: str) -> bool:
        """Remove the deployment's objects; True once none is left. Objects of that name another release made are
        left alone (this release has nothing there to delete)."""
        live = self.kube.get("Deployment", name)
        if live is not None and not manifests.owned_by(live, self.settings.release):
            return True
        for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Deployment"):
            self.kube.delete(kind, name)
            self._wrote(kind, None, name)
        self.kube.delete("Secret", manifests.key_secret(name))
        self._upstream.pop(name, None)
        return self.kube.get("Deployment", name) is None and not self.kube.pods(manifests.selector(name))

    def names(self) -> set[str]:
        if self._seen is not None:
            return set(self._seen.objects["Deployment"])
        mine = {"app.kubernetes.io/managed-by": manifests.MANAGED_BY}
        found = self.kube.deployments(mine | {"app.kubernetes.io/component": manifests.COMPONENT})
        return set(self._own(found))

    def logs(self, name: str, *, tail: int = 100) -> list[str]:
        pods = self.kube.pods(manifests.selector(name))
        if not pods:
            return []
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return self.kube.logs(newest["metadata"]["name"], tail=tail)

    def capacity(self) -> list[PoolBase]:
        """Pools as the nodes labelled ``cove.dev/pool`` add up: allocatable CPU, memory and GPUs."""
        totals: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"cpu": 0.0, "memory": 0, "gpus": 0, "model": "", "mib": 0}
        )
        for node in self.kube.nodes():
            meta = node.get("metadata") or {}
            pool = (meta.get("labels") or {}).get(POOL_LABEL)
            if not pool or (node.get("spec") or {}).get("unschedulable"):
                continue
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            entry = totals[pool]
            entry["cpu"] += _cores(allocatable.get("cpu", "0"))
            entry["memory"] += _mib(allocatable.get("memory", "0"))
            gpus = meta["labels"].get(GPU_COUNT) or allocatable.get("nvidia.com/gpu", 0)
            entry["gpus"] += int(gpus or 0)
            entry["model"] = entry["model"] or meta["labels"].get(GPU_PRODUCT, "")
            entry["mib"] = entry["mib"] or int(meta["labels"].get(GPU_MEMORY, 0) or 0)
        return [
            PoolBase(name=pool, cpu_cores=t["cpu"], memory_mib=t["memory"], gpu_model=t["model"],
                     gpu_count=t["gpus"], gpu_memory_mib=t["mib"], node_selector={POOL_LABEL: pool})
            for pool, t in sorted(totals.items())
        ]  # fmt: skip

    # ------------------------------------------------------------------------------------------------ tasks

    def _jobs(self) -> dict[str, dict[str, Any]]:
        """This pass's task Jobs by name (listed once a pass; every call lists them without ``observe``)."""
        if self._seen is not None and self._seen.jobs is not None:
            return self._seen.jobs
        mine = {"app.kubernetes.io/managed-by": manifests.MANAGED_BY, "app.kubernetes.io/component": manifests.TASK}
        jobs = self._own(self.kube.find("Job", mine))
        if self._seen is not None:
            self._seen.jobs = jobs
        return jobs

    def _task_pods(self, name: str) -> list[dict[str, Any]]:
        if self._seen is not None:
            return self._seen.task_pods.get(name, [])
        return self.kube.pods(_task_selector(name))

    def run_task(self, spec: TaskSpec) -> TaskState:
        """Create the task's Job unless one of that name exists (``manifests.task``; an empty ``spec.image`` is
        COVE_TRAINER_IMAGE), then report it. A failure's state carries the last 20 lines of its pod's log; a
        finished task's state is kept, so later passes read nothing more of it."""
        if not _DNS_LABEL.match(spec.name):
            raise InvalidSpec(f"task name {spec.name!r} is not a DNS label (a-z, 0-9 and -, at most 63)")
        job = self._jobs().get(spec.name)
        if job is None:
            image = spec.image or self.settings.trainer_image
            try:
                job = self.kube.create(manifests.task(replace(spec, image=image), self.target))
            except Conflict:  # made since this pass's read
                job = self.kube.get("Job", spec.name)
                if job is None:
                    raise
            self._jobs()[spec.name] = job
        uid = str((job.get("metadata") or {}).get("uid", ""))
        kept = self._ended.get(spec.name)
        if kept is not None and kept[0] == uid:
            return kept[1]
        pods = self._task_pods(spec.name)
        newest = _newest(pods)
        state = task_state(job, newest)
        if state.phase == "failed" and newest is not None:
            try:
                tail = self.kube.logs(newest["metadata"]["name"], tail=20)
            except NotFound:  # the pod is gone (evicted, or collected): the state says why without its log
                tail = []
            state = task_state(job, newest, log_tail=tail)
        if state.phase in ("succeeded", "failed"):
            self._ended[spec.name] = (uid, state)
        return state

    def stop_task(self, name: str) -> bool:
        """Delete the task's Job in the background (the Job at once, its pod after it); True once the Job is gone."""
        self.kube.delete("Job", name, propagation="Background")
        self._ended.pop(name, None)
        if self._seen is not None and self._seen.jobs is not None:
            self._seen.jobs.pop(name, None)
        return self.kube.get("Job", name) is None

    def tasks(self) -> set[str]:
        """The task Jobs in the namespace (by their component label: not image builds, not model servers)."""
        return set(self._jobs())

    def task_logs(self, name: str, *, tail: int = 100) -> list[str]:
        """The newest pod's log; empty when the task has no pod (queued, or not started)."""
        newest = _newest(self.kube.pods(_task_selector(name)))
        return [] if newest is None else self.kube.logs(newest["metadata"]["name"], tail=tail)

    def close(self, *, stop_workloads: bool) -> None:
        """Workloads are cluster state and keep serving while the control plane restarts."""
        self.kube.api.close()


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a Job's name is its pods' label value too


def _task_selector(name: str) -> dict[str, str]:
    return manifests.selector(name) | {"app.kubernetes.io/component": manifests.TASK}


def _newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)


def _replicas(deployment: dict[str, Any]) -> int | None:
    value = (deployment.get("spec") or {}).get("replicas")
    return None if value is None else int(value)


def _fingerprint(deployment: dict[str, Any]) -> str:
    return str(((deployment.get("metadata") or {}).get("annotations") or {}).get("cove.dev/spec", ""))


_SUFFIX = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "k": 1000 / 1024**2, "M": 1000**2 / 1024**2,
           "G": 1000**3 / 1024**2}  # fmt: skip


def _cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _mib(quantity: str | int) -> int:
    text = str(quantity)
    for suffix, factor in _SUFFIX.items():
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "").isdigit():
            return int(float(text[: -len(suffix)]) * factor)
    return int(int(text) / 1024**2)
