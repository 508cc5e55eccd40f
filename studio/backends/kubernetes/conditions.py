"""What a pod's status means, in words a user can act on. Pure: reads plain dicts as the API returns them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
