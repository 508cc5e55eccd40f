"""Kubernetes' words for what a pod asks for and where it goes, shared by model servers (the Kubernetes backend) and
notebook servers (the hub's spawner), so a pool's placement and a request's GPUs mean the same on both paths; and
what a pending pod's status means. Pure: plain values in, plain dicts out.

GPUs: whole devices are the NVIDIA device plugin's ``nvidia.com/gpu``; a memory slice is HAMi's
``nvidia.com/gpumem`` (MiB) on one device, with ``nvidia.com/gpucores`` (percent of its cores) when a share of
compute is asked for too. Extended resources are set as limits only: Kubernetes then requests the same amount.
A slice pod asks HAMi's scheduler to bin-pack it onto the fullest GPU that takes it, as admission places slices
(``pools.best_fit``), so that GPUs stay whole-free for whole-GPU pods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from studio.values import Resources

GPU = "nvidia.com/gpu"
GPU_MEMORY = "nvidia.com/gpumem"
GPU_CORES = "nvidia.com/gpucores"
# HAMi's per-pod GPU policy, "binpack" (onto the same card) or "spread" (its scheduler's default): the pod
# annotations in Project-HAMi/HAMi docs/config.md ("hami.io/gpu-scheduler-policy").
GPU_POLICY = "hami.io/gpu-scheduler-policy"


def cpu_quantity(cores: float) -> str:
    """``2`` for whole cores, ``500m`` otherwise."""
    if float(cores).is_integer():
        return str(int(cores))
    return f"{round(cores * 1000)}m"


def memory_quantity(mib: int) -> str:
    return f"{mib}Mi"


def gpu_limits(resources: Resources) -> dict[str, str]:
    """The extended resources that give a container its GPUs: whole devices, or one HAMi slice."""
    if resources.gpus:
        return {GPU: str(resources.gpus)}
    if resources.gpu_memory_mib:
        limits = {GPU: "1", GPU_MEMORY: str(resources.gpu_memory_mib)}
        if resources.gpu_cores:
            limits[GPU_CORES] = str(resources.gpu_cores)
        return limits
    return {}


def gpu_annotations(resources: Resources) -> dict[str, str]:
    """The pod annotations a HAMi slice needs (bin-packing onto cards); none for whole GPUs or CPU only."""
    return {GPU_POLICY: "binpack"} if resources.gpu_memory_mib else {}


def resource_requirements(resources: Resources) -> dict[str, dict[str, str]]:
    """A container's ``resources``: CPU and memory requested and capped alike (the pool admitted exactly that)."""
    basics = {"cpu": cpu_quantity(resources.cpu), "memory": memory_quantity(resources.memory_mib)}
    return {"requests": dict(basics), "limits": basics | gpu_limits(resources)}


def placement(node_selector: Mapping[str, str], tolerations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The pod-spec fields that keep a pod on its pool's nodes (copies, so callers may change them)."""
    spec: dict[str, Any] = {}
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    return spec


def restricted_container_context() -> dict[str, Any]:
    """A container securityContext that meets the Pod Security Standard *restricted*."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_context(*, uid: int, gid: int) -> dict[str, Any]:
    """A pod securityContext for *restricted*: a non-root user, files group-owned by ``gid``."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pending_reason(pod: Mapping[str, Any] | None) -> str:
    """Why a pod is not running yet: the scheduler's verdict ("0/3 nodes are available: 3 Insufficient
    nvidia.com/gpu."), or a container waiting (ImagePullBackOff: …); empty when nothing explains it."""
    if not pod:
        return ""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"no node can take it: {condition.get('message') or condition.get('reason') or 'unschedulable'}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in {"ContainerCreating", "PodInitializing"}:
            return f"{container.get('name', 'container')} is waiting: {waiting['reason']}: {waiting.get('message', '')}"
    return ""
