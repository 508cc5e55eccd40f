"""The controller's pure decisions: the status a deployment shows, the replicas autoscaling asks for, and the
workload spec handed to the backend."""

from __future__ import annotations

import pytest

from studio.backends.base import ReplicaStatus, WorkloadSpec, WorkloadStatus
from studio.controller import derive_status, recommend_replicas, workload_spec
from studio.models import Autoscale, Resources, Status
from studio.services.deployments import Desired, Observed

E0, E1 = "http://127.0.0.1:41001", "http://127.0.0.1:41002"
UPSTREAM = "Qwen/Qwen2.5-0.5B-Instruct@abc123"
UNAVAILABLE = (
    "runtime vllm is not available here: the vllm package is not installed; "
    "use the transformers image on CPU, or deploy to a GPU pool on Kubernetes"
)


def workload(*replicas: ReplicaStatus, unavailable: str = "") -> WorkloadStatus:
    return WorkloadStatus("chat", tuple(replicas), upstream_model=UPSTREAM, unavailable=unavailable)


def status(replicas: int, work: WorkloadStatus, threshold: int = 3) -> Observed:
    return derive_status(replicas=replicas, workload=work, failure_threshold=threshold)


# ------------------------------------------------------------------------------------------------ derive_status


def test_a_runtime_that_cannot_run_here_fails_with_the_reason() -> None:
    got = status(1, workload(ReplicaStatus(0, "ready", E0), unavailable=UNAVAILABLE))

    assert got == Observed(Status.FAILED, 0, (), UNAVAILABLE, UPSTREAM)


def test_zero_replicas_with_nothing_left_is_stopped() -> None:
    assert status(0, workload()) == Observed(Status.STOPPED, 0, (), "scaled to zero", UPSTREAM)


def test_zero_replicas_with_replicas_still_running_says_they_are_stopping() -> None:
    got = status(0, workload(ReplicaStatus(0, "ready", E0), ReplicaStatus(1, "terminating")))

    assert got == Observed(Status.STOPPED, 0, (), "stopping 2 replicas", UPSTREAM)


def test_all_replicas_ready_is_ready_with_every_endpoint_and_no_message() -> None:
    got = status(2, workload(ReplicaStatus(0, "ready", E0), ReplicaStatus(1, "ready", E1)))

    assert got == Observed(Status.READY, 2, (E0, E1), "", UPSTREAM)


def test_one_ready_of_two_is_ready_and_says_so() -> None:
    got = status(2, workload(ReplicaStatus(0, "ready", E0), ReplicaStatus(1, "starting")))

    assert got == Observed(Status.READY, 1, (E0,), "1 of 2 replicas ready", UPSTREAM)


def test_one_ready_of_two_adds_what_troubles_the_other() -> None:
    got = status(
        2,
        workload(ReplicaStatus(0, "backoff", failures=1, message="exited with code 1"), ReplicaStatus(1, "ready", E1)),
    )

    assert got == Observed(Status.READY, 1, (E1,), "1 of 2 replicas ready; exited with code 1", UPSTREAM)


def test_a_ready_replica_beats_another_that_failed_many_times() -> None:
    got = status(2, workload(ReplicaStatus(0, "ready", E0), ReplicaStatus(1, "backoff", failures=9, message="OOM")))

    assert got.status == Status.READY


def test_failures_at_the_threshold_fail_with_the_message_and_the_last_log_lines() -> None:
    failing = ReplicaStatus(
        0,
        "backoff",
        restarts=3,
        failures=3,
        message="exited with code 1",
        log_tail=("Traceback (most recent call last):", "OSError: model.safetensors not found"),
    )

    got = status(1, workload(failing))

    assert got == Observed(
        Status.FAILED,
        0,
        (),
        "exited with code 1; 3 failed starts in a row, retrying with backoff\n"
        "last log lines:\n"
        "Traceback (most recent call last):\n"
        "OSError: model.safetensors not found",
        UPSTREAM,
    )


def test_a_failure_without_log_lines_has_no_log_section() -> None:
    got = status(1, workload(ReplicaStatus(0, "backoff", failures=5, message="not ready after 600 s")), threshold=5)

    assert got == Observed(
        Status.FAILED, 0, (), "not ready after 600 s; 5 failed starts in a row, retrying with backoff", UPSTREAM
    )


def test_failures_below_the_threshold_are_still_starting_with_the_last_failure() -> None:
    got = status(1, workload(ReplicaStatus(0, "backoff", failures=2, message="exited with code 1")))

    assert got == Observed(Status.STARTING, 0, (), "exited with code 1", UPSTREAM)


def test_a_starting_replica_is_starting_while_the_model_loads() -> None:
    assert status(1, workload(ReplicaStatus(0, "starting"))) == Observed(
        Status.STARTING, 0, (), "loading the model", UPSTREAM
    )


@pytest.mark.parametrize(
    ("work", "message"),
    [
        (workload(), ""),
        (workload(ReplicaStatus(0, "pending")), ""),
        (workload(ReplicaStatus(0, "pending", message="no free port")), "no free port"),
    ],
    ids=["no-replicas", "pending", "pending-with-message"],
)
def test_nothing_started_is_pending(work: WorkloadStatus, message: str) -> None:
    assert status(1, work) == Observed(Status.PENDING, 0, (), message, UPSTREAM)


def test_ready_replicas_without_an_endpoint_are_counted_but_not_routed_to() -> None:
    got = status(2, workload(ReplicaStatus(0, "ready", None), ReplicaStatus(1, "ready", E1)))

    assert got == Observed(Status.READY, 2, (E1,), "", UPSTREAM)


# ------------------------------------------------------------------------------------------------ recommend_replicas


@pytest.mark.parametrize(
    ("inflight", "target", "lo", "hi", "replicas"),
    [
        (0, 4, 1, 5, 1),  # never below min
        (0, 4, 0, 5, 0),  # scale to zero allowed when min is 0
        (4, 4, 1, 5, 1),
        (4.1, 4, 1, 5, 2),  # rounds up
        (8, 4, 1, 5, 2),
        (9, 4, 1, 5, 3),
        (100, 4, 1, 5, 5),  # never above max
        (2.1, 0.3, 1, 64, 7),  # 2.1/0.3 is 7.000000000000001 in floats: still 7
        (3, 1.5, 2, 4, 2),
    ],
)
def test_recommend_replicas_keeps_each_at_or_below_target_within_bounds(
    inflight: float, target: float, lo: int, hi: int, replicas: int
) -> None:
    assert recommend_replicas(inflight=inflight, target=target, lo=lo, hi=hi) == replicas


# ------------------------------------------------------------------------------------------------ workload_spec


def test_workload_spec_carries_the_desired_state_and_nothing_observed() -> None:
    resources = Resources(cpu=2, memory_mib=4096, gpus=1)
    desired = Desired(
        name="chat",
        generation=4,
        deleting=False,
        replicas=2,
        autoscale=Autoscale(min_replicas=1, max_replicas=3),
        resources=resources,
        runtime_args=("--max-model-len", "8192"),
        runtime="vllm",
        model="Qwen/Qwen2.5-0.5B-Instruct",
        model_revision="abc123",
        model_path="/models/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/abc123",
        image="docker.io/vllm/vllm-openai:v0.11.0",
        health_path="/health",
        local_command=None,
        pool="gpu",
        cluster="east",
        node_selector=(("cove.dev/pool", "gpu"),),
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        image_build="Building",
        image_build_message="building",
        status="Ready",
        ready_replicas=2,
        endpoints=(E0, E1),
        message="",
        upstream_model="chat",
    )

    assert workload_spec(desired) == WorkloadSpec(
        name="chat",
        runtime="vllm",
        model="Qwen/Qwen2.5-0.5B-Instruct",
        model_revision="abc123",
        model_path="/models/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/abc123",
        image="docker.io/vllm/vllm-openai:v0.11.0",
        health_path="/health",
        local_command=None,
        args=("--max-model-len", "8192"),
        resources=resources,
        replicas=2,
        pool="gpu",
        node_selector=(("cove.dev/pool", "gpu"),),
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        autoscale=Autoscale(min_replicas=1, max_replicas=3),
        image_build="Building",
        image_build_message="building",
    )
