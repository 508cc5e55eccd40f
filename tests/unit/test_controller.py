"""The controller's pure decisions: the status a deployment shows, the replicas autoscaling asks for, and whether
a deployment waits for its image to be built."""

from __future__ import annotations

import pytest

from studio.backends.base import ReplicaStatus, WorkloadSpec, WorkloadStatus
from studio.controller import derive_status, image_gate, recommend_replicas
from studio.models import Observed
from studio.services.deployments import Desired
from studio.values import BuildStatus, Status

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


def seen(state: Status, ready: int, endpoints: tuple[str, ...], message: str, upstream: str) -> Observed:
    return Observed(
        status=state, ready_replicas=ready, endpoints=list(endpoints), message=message, upstream_model=upstream
    )


# ------------------------------------------------------------------------------------------------ derive_status


def test_a_runtime_that_cannot_run_here_fails_with_the_reason() -> None:
    got = status(1, workload(ReplicaStatus(0, "ready", E0), unavailable=UNAVAILABLE))

    assert got == seen(Status.FAILED, 0, (), UNAVAILABLE, UPSTREAM)


def test_zero_replicas_with_nothing_left_is_stopped() -> None:
    assert status(0, workload()) == seen(Status.STOPPED, 0, (), "scaled to zero", UPSTREAM)


def test_zero_replicas_with_replicas_still_running_says_they_are_stopping() -> None:
    got = status(0, workload(ReplicaStatus(0, "ready", E0), ReplicaStatus(1, "terminating")))

    assert got == seen(Status.STOPPED, 0, (), "stopping 2 replicas", UPSTREAM)


def test_all_replicas_ready_is_ready_with_every_endpoint_and_no_message() -> None:
    got = status(2, workload(ReplicaStatus(0, "ready", E0), ReplicaStatus(1, "ready", E1)))

    assert got == seen(Status.READY, 2, (E0, E1), "", UPSTREAM)


def test_where_each_running_replica_holds_its_gpus_is_kept_whatever_its_phase() -> None:
    got = status(2, workload(ReplicaStatus(0, "ready", E0, gpus=(1,)), ReplicaStatus(1, "starting", gpus=(0,))))

    assert got.placed == [[1], [0]]  # admission keeps both where they are, the starting one too
    assert status(1, workload(ReplicaStatus(0, "pending"))).placed == []  # not placed yet


def test_one_ready_of_two_is_ready_and_says_so() -> None:
    got = status(2, workload(ReplicaStatus(0, "ready", E0), ReplicaStatus(1, "starting")))

    assert got == seen(Status.READY, 1, (E0,), "1 of 2 replicas ready", UPSTREAM)


def test_one_ready_of_two_adds_what_troubles_the_other() -> None:
    got = status(
        2,
        workload(ReplicaStatus(0, "backoff", failures=1, message="exited with code 1"), ReplicaStatus(1, "ready", E1)),
    )

    assert got == seen(Status.READY, 1, (E1,), "1 of 2 replicas ready; exited with code 1", UPSTREAM)


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

    assert got == seen(
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

    assert got == seen(
        Status.FAILED, 0, (), "not ready after 600 s; 5 failed starts in a row, retrying with backoff", UPSTREAM
    )


def test_failures_below_the_threshold_are_still_starting_with_the_last_failure() -> None:
    got = status(1, workload(ReplicaStatus(0, "backoff", failures=2, message="exited with code 1")))

    assert got == seen(Status.STARTING, 0, (), "exited with code 1", UPSTREAM)


def test_a_starting_replica_is_starting_while_the_model_loads() -> None:
    assert status(1, workload(ReplicaStatus(0, "starting"))) == seen(
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
    assert status(1, work) == seen(Status.PENDING, 0, (), message, UPSTREAM)


def test_ready_replicas_without_an_endpoint_are_counted_but_not_routed_to() -> None:
    got = status(2, workload(ReplicaStatus(0, "ready", None), ReplicaStatus(1, "ready", E1)))

    assert got == seen(Status.READY, 2, (E1,), "", UPSTREAM)


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


# ------------------------------------------------------------------------------------------------ image_gate


def desired(build: BuildStatus, message: str = "") -> Desired:
    spec = WorkloadSpec(
        name="chat", runtime="custom", model="Qwen/Qwen2.5-0.5B-Instruct", model_revision="abc123",
        image="registry.example.com/team/server:1.0",
    )  # fmt: skip
    return Desired(
        spec=spec, generation=1, deleting=False, cluster="default", observed=Observed(),
        image_build=build, image_build_message=message,
    )  # fmt: skip


def test_a_deployment_whose_image_could_not_be_built_fails_with_the_builds_reason() -> None:
    gate = image_gate(desired(BuildStatus.FAILED, "the build exited with code 1"))

    assert gate is not None
    assert status(1, gate) == seen(
        Status.FAILED, 0, (), "its image could not be built: the build exited with code 1", ""
    )


@pytest.mark.parametrize("build", [BuildStatus.PENDING, BuildStatus.BUILDING])
def test_a_deployment_waits_pending_while_its_image_is_built(build: BuildStatus) -> None:
    gate = image_gate(desired(build))

    assert gate is not None
    assert status(1, gate) == seen(
        Status.PENDING, 0, (), "waiting for its image registry.example.com/team/server:1.0 to be built", ""
    )


@pytest.mark.parametrize("build", [BuildStatus.READY, BuildStatus.NONE])
def test_a_built_image_or_one_built_elsewhere_lets_the_deployment_start(build: BuildStatus) -> None:
    assert image_gate(desired(build)) is None
