"""KubernetesBackend: a Cove deployment is a Deployment (+ Service, + PodDisruptionBudget with several replicas) in
the cluster; its replicas are its pods. Everything is built by ``manifests`` and sent through ``client``.

``apply`` is called on every reconcile pass, so it reads before it writes: the Deployment is created when missing
and patched only when the spec's fingerprint or the replica count changed. Workloads outlive the control plane:
closing the backend leaves them running; only ``delete`` removes them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from studio.backends.base import DetectedPool, WorkloadSpec, WorkloadStatus
from studio.backends.kubernetes import manifests
from studio.backends.kubernetes.client import KubeClient
from studio.backends.kubernetes.conditions import replica_status
from studio.runtimes import CONTAINER_PORT, container_launch
from studio.settings import Settings

POOL_LABEL = "cove.dev/pool"  # nodes carry the name of their pool
GPU_PRODUCT = "nvidia.com/gpu.product"  # set by NVIDIA's GPU feature discovery
GPU_MEMORY = "nvidia.com/gpu.memory"  # MiB per GPU, also from feature discovery


class KubernetesBackend:
    def __init__(self, settings: Settings, kube: KubeClient) -> None:
        self.settings, self.kube = settings, kube
        self.target = manifests.Target(
            namespace=kube.namespace, models_pvc=settings.models_pvc, start_timeout_s=settings.runtime_start_timeout_s
        )
        self._upstream: dict[str, str] = {}

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        launch = container_launch(spec, local_models_dir=self.settings.models_dir)
        wanted = manifests.model_server(spec, launch, self.target, replicas=spec.replicas)
        live = self.kube.get("Deployment", spec.name)
        if live is None:
            self.kube.create(wanted)
            self.kube.apply(manifests.service(spec.name, self.target))
        elif _fingerprint(live) != spec.fingerprint or (live.get("spec") or {}).get("replicas") != spec.replicas:
            self.kube.patch(wanted)
        if spec.replicas > 1 and self.kube.get("PodDisruptionBudget", spec.name) is None:
            self.kube.create(manifests.disruption_budget(spec.name, self.target))
        self._upstream[spec.name] = launch.upstream_model
        return self.status(spec.name)

    def status(self, name: str) -> WorkloadStatus:
        pods = self.kube.pods(manifests.selector(name))
        replicas = tuple(replica_status(pod, i, port=CONTAINER_PORT) for i, pod in enumerate(pods))
        return WorkloadStatus(name=name, replicas=replicas, upstream_model=self._upstream.get(name, ""))

    def delete(self, name: str) -> bool:
        for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Deployment"):
            self.kube.delete(kind, name)
        self._upstream.pop(name, None)
        return self.kube.get("Deployment", name) is None and not self.kube.pods(manifests.selector(name))

    def names(self) -> set[str]:
        mine = {"app.kubernetes.io/managed-by": manifests.MANAGED_BY}
        found = self.kube.deployments(mine | {"app.kubernetes.io/component": manifests.COMPONENT})
        return {d["metadata"]["name"] for d in found}

    def logs(self, name: str, *, tail: int = 100) -> list[str]:
        pods = self.kube.pods(manifests.selector(name))
        if not pods:
            return []
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return self.kube.logs(newest["metadata"]["name"], tail=tail)

    def capacity(self) -> list[DetectedPool]:
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
            entry["gpus"] += int(allocatable.get("nvidia.com/gpu", 0) or 0)
            entry["model"] = entry["model"] or meta["labels"].get(GPU_PRODUCT, "")
            entry["mib"] = entry["mib"] or int(meta["labels"].get(GPU_MEMORY, 0) or 0)
        return [
            DetectedPool(name=pool, cpu_cores=t["cpu"], memory_mib=t["memory"], gpu_model=t["model"],
                         gpu_count=t["gpus"], gpu_memory_mib=t["mib"])
            for pool, t in sorted(totals.items())
        ]  # fmt: skip

    def close(self, *, stop_workloads: bool) -> None:
        """Workloads are cluster state and keep serving while the control plane restarts."""
        self.kube.api.close()


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
