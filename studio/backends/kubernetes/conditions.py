"""What a model-server pod's and a build Job's status mean, in words a user can act on. Pure: reads plain dicts as
the API returns them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from studio.backends.base import BuildState, ReplicaStatus
from studio.pods import pending_reason


def replica_status(pod: Mapping[str, Any], index: int, *, port: int) -> ReplicaStatus:
    """One model-server pod as a replica: ready with its endpoint, starting, pending (and why), or failing in words:
    out of memory, an image that cannot be pulled, a crash loop with its exit code."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    boxes = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in boxes)
    if meta.get("deletionTimestamp"):
        return ReplicaStatus(index, "terminating", restarts=restarts)
    for box in boxes:
        waiting = (box.get("state") or {}).get("waiting") or {}
        last = (box.get("lastState") or {}).get("terminated") or (box.get("state") or {}).get("terminated") or {}
        if last.get("reason") == "OOMKilled":
            return ReplicaStatus(
                index, "backoff", restarts=restarts, failures=max(restarts, 1),
                message="the runtime ran out of memory (OOMKilled): give the deployment more memory",
            )  # fmt: skip
        if waiting.get("reason") in {"ImagePullBackOff", "ErrImagePull", "InvalidImageName"}:
            why = waiting.get("message") or waiting["reason"]
            return ReplicaStatus(
                index, "backoff", restarts=restarts, failures=max(restarts, 1),
                message=f"the image {box.get('image', '')} cannot be pulled: {why}",
            )  # fmt: skip
        if waiting.get("reason") == "CrashLoopBackOff":
            code = last.get("exitCode", "?")
            return ReplicaStatus(
                index, "backoff", restarts=restarts, failures=restarts,
                message=f"the runtime keeps exiting (code {code}): see the deployment's logs",
            )  # fmt: skip
    if status.get("phase") == "Running" and boxes and all(c.get("ready") for c in boxes) and status.get("podIP"):
        return ReplicaStatus(index, "ready", endpoint=f"http://{status['podIP']}:{port}", restarts=restarts)
    if status.get("phase") == "Running":
        return ReplicaStatus(index, "starting", restarts=restarts, message="loading the model")
    if status.get("phase") == "Failed":
        return ReplicaStatus(index, "backoff", restarts=restarts, failures=1, message=status.get("message", "failed"))
    return ReplicaStatus(index, "pending", restarts=restarts, message=pending_reason(pod) or "waiting for a node")


def build_state(job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> BuildState:
    """An image build Job in words: done, failed (with the reason the Job or its pod gives), building, or pending
    and why (the builder image cannot be pulled, no node can take it)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if status.get("succeeded") or "Complete" in conditions:
        return BuildState("succeeded", "built and pushed")
    if status.get("failed") or "Failed" in conditions:
        why = (conditions.get("Failed") or {}).get("message") or ""
        for box in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
            ended = (box.get("state") or {}).get("terminated") or {}
            if ended:
                why = f"the build exited with code {ended.get('exitCode', '?')}" + (
                    f": {ended['message']}" if ended.get("message") else ""
                )
        return BuildState("failed", why or "the build failed")
    waiting = pending_reason(pod)
    if waiting:
        return BuildState("pending", waiting)
    if ((pod or {}).get("status") or {}).get("phase") == "Running":
        return BuildState("building", "building")
    return BuildState("pending", "waiting for the build to start")
