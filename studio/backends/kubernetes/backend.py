"""KubernetesBackend: a Cove deployment is a Deployment (+ Service, + PodDisruptionBudget with several replicas, +
HorizontalPodAutoscaler with ``COVE_AUTOSCALER=hpa``) in the cluster; its replicas are its pods. Everything is built
by ``manifests`` and sent through ``client``.

``apply`` is called on every reconcile pass, so it reads before it writes: the Deployment is created when missing
and patched only when the spec's fingerprint or the replica count changed (with an HPA the count is the HPA's).
The reads come from ``observe``, which the controller calls once a pass: a few lists of the namespace (Deployments,
pods, disruption budgets, and HPAs when the cluster scales) however many deployments there are. Without it each
``apply`` reads its own objects.
Workloads outlive the control plane: closing the backend leaves them running; only ``delete`` removes them.

Images registered with a Dockerfile are built by a Kaniko Job in ``COVE_BUILD_NAMESPACE`` (Kaniko needs root, so
not next to the restricted workloads) and pushed to their reference; the controller holds deployments of such an
image back until it is pushed (``runs_images``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from studio.backends.base import BuildSpec, BuildState, Connection, TaskSpec, TaskState, WorkloadSpec, WorkloadStatus
from studio.backends.kubernetes import manifests
from studio.backends.kubernetes.client import KubeClient
from studio.backends.kubernetes.conditions import build_state, replica_status
from studio.errors import BackendUnavailable
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
    """One read of the namespace: Cove's objects by kind and name, and their pods by deployment."""

    objects: dict[str, dict[str, dict[str, Any]]]
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


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
            namespace=kube.namespace, models_pvc=settings.models_pvc, start_timeout_s=settings.runtime_start_timeout_s
        )
        self.autoscales = settings.autoscaler == "hpa"
        self.runs_images = True
        self._upstream: dict[str, str] = {}
        self._seen: _Seen | None = None

    def observe(self) -> None:
        """Read what Cove runs in the namespace, for this pass's ``apply``/``status``/``names``."""
        mine = {
            "app.kubernetes.io/managed-by": manifests.MANAGED_BY,
            "app.kubernetes.io/component": manifests.COMPONENT,
        }
        kinds = ["Deployment", "PodDisruptionBudget"] + (["HorizontalPodAutoscaler"] if self.autoscales else [])
        objects = {kind: {o["metadata"]["name"]: o for o in self.kube.find(kind, mine)} for kind in kinds}
        pods: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in self.kube.pods(mine):
            pods[((pod.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/instance", "")].append(pod)
        self._seen = _Seen(objects, dict(pods))

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
        # with an HPA the replica count is the HPA's: set once, at creation, and never patched back
        replicas = None if hpa and live is not None else spec.replicas
        wanted = manifests.model_server(spec, launch, self.target, replicas=replicas)
        if live is None:
            key = upstream_key(studio_key(self.settings), spec.name)  # the gateway derives the same
            self.kube.apply(manifests.secret(manifests.key_secret(spec.name), self.target, {"key": key}))
            self._wrote("Deployment", self.kube.create(wanted))
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
            status = WorkloadStatus(status.name, status.replicas, status.upstream_model, scaled_to=_replicas(live))
        return status

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
            spec.name, self.target, lo=auto.min_replicas, hi=auto.max_replicas,
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
        """Start a Kaniko Job for the image unless one exists (its name hashes the Dockerfile, the destination and
        the attempt), then read how it goes; a finished build's Dockerfile Secret is removed (the Job stays a day,
        for its logs)."""
        body = f"{spec.destination}\0{spec.dockerfile}\0{spec.attempt}"
        digest = hashlib.sha256(body.encode()).hexdigest()[:10]
        name = f"build-{digest}"
        target = manifests.Target(namespace=self.builds.namespace, models_pvc="")
        job = self.builds.get("Job", name)
        if job is None:
            for obj in manifests.image_build(
                name, target, dockerfile=spec.dockerfile, destination=spec.destination,
                push_secret=self.settings.registry_secret, builder=self.settings.builder_image,
            ):  # fmt: skip
                self.builds.apply(obj)
            return BuildState("pending", f"build job {self.builds.namespace}/{name} created")
        pods = self.builds.pods(manifests.selector(name))
        state = build_state(job, pods[-1] if pods else None)
        if state.phase == "failed" and pods:
            tail = self.builds.logs(pods[-1]["metadata"]["name"], tail=20)
            state = BuildState("failed", "\n".join([state.message, *tail]))
        if state.phase in ("succeeded", "failed"):
            self.builds.delete("Secret", f"{name}-context")
        return state

    def delete(self, name: str) -> bool:
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
        return {d["metadata"]["name"] for d in found}

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

    # Tasks (fine-tunes) are not run by this backend yet.
    def run_task(self, spec: TaskSpec) -> TaskState:
        raise BackendUnavailable(f"{type(self).__name__} cannot run tasks yet", hint="fine-tuning is being built")

    def stop_task(self, name: str) -> bool:
        return True

    def tasks(self) -> set[str]:
        return set()

    def task_logs(self, name: str, *, tail: int = 100) -> list[str]:
        return []

    def close(self, *, stop_workloads: bool) -> None:
        """Workloads are cluster state and keep serving while the control plane restarts."""
        self.kube.api.close()


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
