"""What a model-server pod's, a build Job's and a task Job's status mean, in words a user can act on. Pure: reads
plain dicts as the API returns them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from studio.backends.base import BuildState, ReplicaStatus, TaskState
from studio.backends.kubernetes.manifests import BUILD_CONTAINER, PUSH_CONTAINER, QUEUE_LABEL
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
    """An image build Job in words: done, failed (in the build, with Kaniko's exit code, or in the push to the
    registry after a good build), building or pushing, or pending and why (an image cannot be pulled, no node can
    take it). The pod runs Kaniko as its init container (``manifests.BUILD_CONTAINER``), then the pusher
    (``manifests.PUSH_CONTAINER``)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if status.get("succeeded") or "Complete" in conditions:
        return BuildState("succeeded", "built and pushed")
    steps = _build_steps(pod)
    if status.get("failed") or "Failed" in conditions:
        why = (conditions.get("Failed") or {}).get("message") or ""
        step = failed_step(pod)
        ended = (steps.get(step) or {}).get("terminated") or {}
        if ended:
            doing = "the build exited" if step == BUILD_CONTAINER else "the push to the registry exited"
            said = f": {ended['message']}" if ended.get("message") else ""
            why = f"{doing} with code {ended.get('exitCode', '?')}{said}"
            if step == PUSH_CONTAINER:
                why = f"built, but not pushed: {why} (do the push credentials, COVE_REGISTRY_SECRET, allow it?)"
        return BuildState("failed", why or "the build failed")
    for step, state in steps.items():
        waiting = state.get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in {"ContainerCreating", "PodInitializing"}:
            return BuildState("pending", f"{step} is waiting: {waiting['reason']}: {waiting.get('message', '')}")
    waiting_for = pending_reason(pod)
    if waiting_for:
        return BuildState("pending", waiting_for)
    if "running" in (steps.get(PUSH_CONTAINER) or {}):
        return BuildState("building", "built; pushing to the registry")
    if "running" in (steps.get(BUILD_CONTAINER) or {}):
        return BuildState("building", "building")
    return BuildState("pending", "waiting for the build to start")


def failed_step(pod: Mapping[str, Any] | None) -> str:
    """Which container of a build pod ended in failure, the build or the push (whose log says why); empty when
    neither did (the pod is gone, or never started)."""
    for step, state in _build_steps(pod).items():
        if int((state.get("terminated") or {}).get("exitCode") or 0) != 0:
            return step
    return ""


def _build_steps(pod: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The state of each container of a build pod by name, the init container (the build) first."""
    status = (pod or {}).get("status") or {}
    boxes = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return {str(box.get("name", "")): dict(box.get("state") or {}) for box in boxes}


def task_state(job: Mapping[str, Any], pod: Mapping[str, Any] | None, *, log_tail: Sequence[str] = ()) -> TaskState:
    """A task's Job (and its newest pod) in words: succeeded; failed, and why (out of memory (OOMKilled), past its
    deadline (DeadlineExceeded), evicted from its node, or its exit code), with ``log_tail`` kept for a failure;
    running; or pending, and why (queued in its Kueue queue while suspended, the scheduler's message, an image that
    cannot be pulled)."""
    status, spec = job.get("status") or {}, job.get("spec") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    pod_status = (pod or {}).get("status") or {}
    if "Complete" in conditions or status.get("succeeded"):
        return TaskState("succeeded", "finished")
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is not None:
        message, code = _failure(job, failed, pod_status)
        return TaskState("failed", message, exit_code=code, log_tail=tuple(log_tail))
    # Suspended before a failing pod counts: Kueue suspends a Job it preempts (its pod is killed, not failed) and
    # starts it again once the queue has room.
    if spec.get("suspend"):
        queue = ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
        if queue:
            return TaskState("pending", f"queued in {queue}: Kueue starts it when the queue's quota has room")
        return TaskState("pending", "suspended")
    ending = pod_status.get("phase") == "Failed" and not ((pod or {}).get("metadata") or {}).get("deletionTimestamp")
    if status.get("failed") or ending:  # the pod ended before the Job controller said so (no retries follow)
        message, code = _failure(job, {}, pod_status)
        return TaskState("failed", message, exit_code=code, log_tail=tuple(log_tail))
    if pod_status.get("phase") in ("Running", "Succeeded"):  # Succeeded: the Job controller has yet to say so
        return TaskState("running", "running")
    waiting = pending_reason(pod)
    if waiting:
        return TaskState("pending", waiting)
    return TaskState("pending", "waiting for its pod to start" if pod else "waiting for the job to start")


def _failure(
    job: Mapping[str, Any], failed: Mapping[str, Any], pod_status: Mapping[str, Any]
) -> tuple[str, int | None]:
    """Why a task failed, in words, and its container's exit code when it has one."""
    ended: Mapping[str, Any] = {}
    for box in pod_status.get("containerStatuses") or []:
        ended = (box.get("state") or {}).get("terminated") or (box.get("lastState") or {}).get("terminated") or ended
    code = ended.get("exitCode")
    code = None if code is None else int(code)
    if ended.get("reason") == "OOMKilled":
        boxes = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
        limit = ((boxes[0].get("resources") or {}).get("limits") or {}).get("memory")
        beyond = f" its memory limit ({limit})" if limit else " its memory limit"
        return f"out of memory (OOMKilled): the process used more than{beyond}", code
    if failed.get("reason") == "DeadlineExceeded":
        said = f": {failed['message']}" if failed.get("message") else ""
        return f"it ran past its time limit (DeadlineExceeded){said}", code
    if pod_status.get("reason") == "Evicted":
        return f"its pod was evicted: {pod_status.get('message') or 'the node ran short of resources'}", code
    if code is not None:
        said = f": {ended['message']}" if ended.get("message") else ""
        return f"it exited with code {code}{said}", code
    return failed.get("message") or failed.get("reason") or pod_status.get("message") or "the job failed", code
