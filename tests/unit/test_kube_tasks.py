"""A task (a fine-tune) as a Kubernetes Job: the whole manifest from a TaskSpec (mounts, environment, the pool's GPUs
and placement, restricted security, the Kueue queue label only when a queue is set), the pod paths the control plane
gives, and what a Job's and its pod's status mean as a TaskState."""

from __future__ import annotations

from typing import Any

import pytest

from studio.backends.base import TaskSpec, TaskState
from studio.backends.kubernetes.conditions import task_state
from studio.backends.kubernetes.manifests import Target, pod_path, task
from studio.errors import InvalidSpec
from studio.values import Resources
from tests.schemas import assert_valid, restricted_problems

TARGET = Target(namespace="models", models_pvc="cove-models", datasets_pvc="cove-datasets")
TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
WORKDIR = "/data/models/finetunes/ft-7"
LABELS = {
    "app.kubernetes.io/name": "ft-7",
    "app.kubernetes.io/instance": "ft-7",
    "app.kubernetes.io/component": "task",
    "app.kubernetes.io/managed-by": "cove",
}


def tune(**overrides: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "name": "ft-7",
        "command": ("python", "-m", "studio.trainer", f"{WORKDIR}/plan.json"),
        "workdir": WORKDIR,
        "image": "cove/fine-tune:0.1.0",
        "env": (("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),),
        "resources": Resources(cpu=8, memory_mib=65536, gpus=1),
        "pool": "train",
        "node_selector": (("cove.dev/pool", "train"),),
        "tolerations": (TAINT,),
    }
    return TaskSpec(**(values | overrides))


def test_a_fine_tune_job_in_full() -> None:
    job = task(tune(), TARGET)
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "ft-7", "namespace": "models", "labels": LABELS,
                     "annotations": {"cove.dev/workdir": WORKDIR}},
        "spec": {
            "backoffLimit": 0,  # a resume is a new task, from checkpoints
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "task",
                        "image": "cove/fine-tune:0.1.0",
                        "command": ["python"],
                        "args": ["-m", "studio.trainer", f"{WORKDIR}/plan.json"],
                        "workingDir": WORKDIR,
                        "env": [
                            {"name": "HF_HUB_CACHE", "value": "/data/models"},
                            {"name": "HF_HUB_OFFLINE", "value": "1"},
                            {"name": "HOME", "value": "/tmp"},
                            {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"},
                        ],
                        "resources": {
                            "requests": {"cpu": "8", "memory": "65536Mi"},
                            "limits": {"cpu": "8", "memory": "65536Mi", "nvidia.com/gpu": "1"},
                        },
                        "volumeMounts": [
                            {"name": "models", "mountPath": "/data/models", "readOnly": False},
                            {"name": "datasets", "mountPath": "/data/datasets", "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "shm", "mountPath": "/dev/shm"},
                        ],
                        "securityContext": {
                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                            "readOnlyRootFilesystem": True,
                        },
                    }],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": "cove-models", "readOnly": False}},
                        {"name": "datasets",
                         "persistentVolumeClaim": {"claimName": "cove-datasets", "readOnly": True}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16384Mi"}},
                    ],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                        "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": False,
                    "nodeSelector": {"cove.dev/pool": "train"},
                    "tolerations": [TAINT],
                    "enableServiceLinks": False,
                },
            },
        },
    }  # fmt: skip
    assert_valid(job)
    assert restricted_problems(job["spec"]["template"]["spec"]) == []


def test_a_queue_labels_the_job_and_creates_it_suspended_for_kueue() -> None:
    queued = task(tune(queue="team-a"), TARGET)
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert queued["spec"]["suspend"] is True
    assert "kueue.x-k8s.io/queue-name" not in queued["spec"]["template"]["metadata"]["labels"]
    plain = task(tune(), TARGET)
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    assert "suspend" not in plain["spec"]
    assert_valid(queued)


def test_a_hami_slice_and_spec_env_over_the_defaults() -> None:
    job = task(tune(resources=Resources(cpu=2, memory_mib=8192, gpu_memory_mib=12288, gpu_cores=50),
                    env=(("HF_HUB_OFFLINE", "0"),)), TARGET)  # fmt: skip
    box = job["spec"]["template"]["spec"]["containers"][0]
    assert box["resources"]["limits"] == {
        "cpu": "2", "memory": "8192Mi",
        "nvidia.com/gpu": "1", "nvidia.com/gpumem": "12288", "nvidia.com/gpucores": "50",
    }  # fmt: skip
    assert {"name": "HF_HUB_OFFLINE", "value": "0"} in box["env"]
    assert [e["name"] for e in box["env"]].count("HF_HUB_OFFLINE") == 1
    assert_valid(job)


def test_the_builder_is_deterministic_and_leaves_its_input_alone() -> None:
    spec = tune()
    first = task(spec, TARGET)
    first["spec"]["template"]["spec"]["tolerations"][0]["key"] = "changed"
    assert spec.tolerations == (TAINT,)
    assert TAINT["key"] == "nvidia.com/gpu"
    assert task(spec, TARGET) == task(tune(), TARGET)


def test_pod_paths_of_the_control_planes_claims() -> None:
    where = {"models_dir": "/var/lib/cove/models", "datasets_dir": "/var/lib/cove/datasets"}
    assert pod_path("/var/lib/cove/models/finetunes/ft-7", **where) == "/data/models/finetunes/ft-7"
    assert pod_path("/var/lib/cove/datasets/d1/v2/train.jsonl", **where) == "/data/datasets/d1/v2/train.jsonl"
    assert pod_path("/var/lib/cove/models", **where) == "/data/models"
    with pytest.raises(InvalidSpec) as refused:
        pod_path("/var/lib/cove/models-old/x", **where)
    assert "neither the models claim" in refused.value.message


# ------------------------------------------------------------------------------------------------ states

JOB = task(tune(), TARGET)


def job_with(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {**JOB, "spec": {**JOB["spec"], **spec}, "status": status}


def pod_with(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "ft-7-abcde"}, "status": status}


def ended(**terminated: Any) -> dict[str, Any]:
    return {"phase": "Failed", "containerStatuses": [{"name": "task", "state": {"terminated": terminated}}]}


FAILED = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                       "message": "Job has reached the specified backoff limit"}]}  # fmt: skip


def test_queued_scheduled_running_and_done() -> None:
    queued = task(tune(queue="team-a"), TARGET) | {"status": {}}
    assert task_state(queued, None) == TaskState(
        "pending", "queued in team-a: Kueue starts it when the queue's quota has room"
    )
    assert task_state(job_with({}), None) == TaskState("pending", "waiting for the job to start")
    full = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    unschedulable = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                         "reason": "Unschedulable", "message": full}]}  # fmt: skip
    assert task_state(job_with({"active": 1}), pod_with(unschedulable)) == TaskState(
        "pending", "no node can take it: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    )
    assert task_state(job_with({"active": 1}), pod_with({"phase": "Running"})).phase == "running"
    complete = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    assert task_state(job_with(complete), pod_with({"phase": "Succeeded"})) == TaskState("succeeded", "finished")


def test_each_failure_says_why() -> None:
    oom = task_state(job_with(FAILED), pod_with(ended(reason="OOMKilled", exitCode=137)), log_tail=["step 40"])
    assert oom == TaskState(
        "failed", "out of memory (OOMKilled): the process used more than its memory limit (65536Mi)",
        exit_code=137, log_tail=("step 40",),
    )  # fmt: skip
    crashed = task_state(job_with(FAILED), pod_with(ended(reason="Error", exitCode=1)), log_tail=["Traceback", "x"])
    assert crashed == TaskState("failed", "it exited with code 1", exit_code=1, log_tail=("Traceback", "x"))
    late = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                         "message": "Job was active longer than specified deadline"}]}  # fmt: skip
    assert task_state(job_with(late), None).message == (
        "it ran past its time limit (DeadlineExceeded): Job was active longer than specified deadline"
    )
    evicted = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}
    assert task_state(job_with(FAILED), pod_with(evicted)).message == (
        "its pod was evicted: The node was low on resource: memory."
    )
    # the pod failed before the Job controller said so: failed already
    assert task_state(job_with({"active": 1}), pod_with(ended(reason="Error", exitCode=3))).exit_code == 3
    assert task_state(job_with(FAILED), None).message == "Job has reached the specified backoff limit"


def test_a_job_kueue_preempted_is_queued_again_not_failed() -> None:
    preempted = task(tune(queue="team-a"), TARGET) | {"status": {"active": 0}}
    killed = {**pod_with(ended(reason="Error", exitCode=143)), "metadata": {
        "name": "ft-7-abcde", "deletionTimestamp": "2026-11-23T00:00:00Z"}}  # fmt: skip
    assert task_state(preempted, killed).message.startswith("queued in team-a")
