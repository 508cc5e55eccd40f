"""The pure Kubernetes pieces shared by the notebook spawner and the model-server backend: quantities, GPU
resources (whole devices or HAMi slices), pool placement, the restricted security context, and pod status in words."""

from __future__ import annotations

from typing import Any

import pytest

from studio.backends.kubernetes.conditions import pending_reason
from studio.backends.kubernetes.manifests import (
    cpu_quantity,
    gpu_limits,
    placement,
    resource_requirements,
    restricted_container_context,
    restricted_pod_context,
)
from studio.models import Resources


@pytest.mark.parametrize(("cores", "quantity"), [(1, "1"), (2.0, "2"), (0.5, "500m"), (1.25, "1250m")])
def test_cpu_is_whole_cores_or_millicores(cores: float, quantity: str) -> None:
    assert cpu_quantity(cores) == quantity


def test_whole_gpus_slices_and_cpu_only() -> None:
    assert gpu_limits(Resources(gpus=4)) == {"nvidia.com/gpu": "4"}
    assert gpu_limits(Resources(gpu_memory_mib=8192)) == {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8192"}
    assert gpu_limits(Resources(gpu_memory_mib=128, gpu_cores=25)) == {
        "nvidia.com/gpu": "1",
        "nvidia.com/gpumem": "128",
        "nvidia.com/gpucores": "25",
    }
    assert gpu_limits(Resources()) == {}


def test_requests_equal_limits_and_gpus_are_limits_only() -> None:
    got = resource_requirements(Resources(cpu=0.5, memory_mib=3072, gpus=1))
    assert got == {
        "requests": {"cpu": "500m", "memory": "3072Mi"},
        "limits": {"cpu": "500m", "memory": "3072Mi", "nvidia.com/gpu": "1"},
    }
    got["requests"]["cpu"] = "9"
    assert got["limits"]["cpu"] == "500m"  # no shared dicts between requests and limits


def test_placement_copies_and_leaves_out_what_is_empty() -> None:
    taints = [{"key": "gpu", "operator": "Exists"}]
    got = placement({"pool": "a"}, taints)
    assert got == {"nodeSelector": {"pool": "a"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}
    got["tolerations"][0]["key"] = "other"
    assert taints == [{"key": "gpu", "operator": "Exists"}]
    assert placement({}, []) == {}


def test_security_contexts_meet_pod_security_restricted() -> None:
    container = restricted_container_context()
    assert container["allowPrivilegeEscalation"] is False
    assert container["runAsNonRoot"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    assert restricted_pod_context(uid=1000, gid=100) == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    restricted_container_context()["capabilities"]["drop"].append("x")
    assert restricted_container_context()["capabilities"] == {"drop": ["ALL"]}


UNSCHEDULABLE: dict[str, Any] = {
    "status": {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."},
        ],
    }
}  # fmt: skip
PULLING: dict[str, Any] = {
    "status": {
        "phase": "Pending",
        "containerStatuses": [
            {"name": "notebook", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
        ],
    }
}


def test_a_pending_pod_says_why() -> None:
    assert pending_reason(UNSCHEDULABLE) == (
        "no node can take it: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    )
    assert pending_reason(PULLING) == "notebook is waiting: ImagePullBackOff: not found"
    creating = {"status": {"containerStatuses": [{"name": "n", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert pending_reason(creating) == ""
    assert pending_reason({"status": {"phase": "Pending"}}) == ""
    assert pending_reason(None) == ""
