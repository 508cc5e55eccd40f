"""Fine-tune tasks on Kubernetes: KubernetesBackend's run_task/stop_task/tasks/task_logs against a Kubernetes API
(kmock's emulator, tests/fakes/kubeapi.py) through the official client, with the test playing Kueue, the Job
controller and the kubelet (a Job unsuspended, its pod Pending, Running, OOMKilled, done). Every Job sent is
schema-validated and its pod checked against Pod Security *restricted*."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.backends.base import TaskSpec, TaskState
from studio.backends.kubernetes.backend import KubernetesBackend
from studio.backends.kubernetes.client import KubeClient, connect
from studio.errors import InvalidSpec
from studio.values import Resources
from tests.conftest import make_settings
from tests.fakes.kubeapi import Cluster
from tests.schemas import assert_valid, restricted_problems

NS = "models"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS = f"/api/v1/namespaces/{NS}/pods"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


@pytest.fixture
def backend(cluster: Cluster, tmp_path: Path) -> Iterator[KubernetesBackend]:
    settings = make_settings(tmp_path, models_pvc="cove-models", datasets_pvc="cove-datasets")
    made = KubernetesBackend(settings, KubeClient(connect(host=cluster.url), NS))
    yield made
    made.close(stop_workloads=False)


def tune(name: str = "ft-7", **overrides: Any) -> TaskSpec:
    workdir = f"/data/models/finetunes/{name}"
    values: dict[str, Any] = {
        "name": name,
        "command": ("python", "-m", "studio.trainer", f"{workdir}/plan.json"),
        "workdir": workdir,
        "resources": Resources(cpu=8, memory_mib=32768, gpus=1),
        "pool": "train",
        "node_selector": (("cove.dev/pool", "train"),),
    }
    return TaskSpec(**(values | overrides))


def stored_jobs(cluster: Cluster) -> list[dict[str, Any]]:
    assert cluster.api is not None
    return cluster.api.stored("jobs", NS)


def start_pod(cluster: Cluster, name: str, status: dict[str, Any], *, suffix: str = "x1") -> str:
    """Play the Job controller (a pod from the Job's template), then the kubelet (the pod's status)."""
    (job,) = [j for j in stored_jobs(cluster) if j["metadata"]["name"] == name]
    template = job["spec"]["template"]
    pod = f"{name}-{suffix}"
    cluster.create(PODS, {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
                          "metadata": {**template["metadata"], "name": pod}})  # fmt: skip
    cluster.patch(f"{PODS}/{pod}/status", {"status": status})
    return pod


def test_run_task_creates_one_job_and_reports_it_until_it_succeeds(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    assert backend.run_task(tune()) == TaskState("pending", "waiting for the job to start")
    assert backend.run_task(tune()) == TaskState("pending", "waiting for the job to start")  # idempotent
    assert cluster.api is not None
    (sent,) = cluster.api.sent("POST", "jobs")
    assert_valid(sent)
    pod_spec = sent["spec"]["template"]["spec"]
    assert restricted_problems(pod_spec) == []
    box = pod_spec["containers"][0]
    assert box["image"] == "cove/fine-tune:0.1.0"  # COVE_TRAINER_IMAGE when the spec names none
    assert [box["command"], box["args"], box["workingDir"]] == [
        ["python"], ["-m", "studio.trainer", "/data/models/finetunes/ft-7/plan.json"], "/data/models/finetunes/ft-7",
    ]  # fmt: skip
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod_spec["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {
        "models": {"claimName": "cove-models", "readOnly": False},
        "datasets": {"claimName": "cove-datasets", "readOnly": True},
    }
    assert pod_spec["nodeSelector"] == {"cove.dev/pool": "train"}
    assert box["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "suspend" not in sent["spec"]
    assert "kueue.x-k8s.io/queue-name" not in sent["metadata"]["labels"]

    start_pod(cluster, "ft-7", {"phase": "Running"})
    cluster.patch(f"{JOBS}/ft-7/status", {"status": {"active": 1}})
    assert backend.run_task(tune()) == TaskState("running", "running")

    done = {"succeeded": 1, "active": 0, "conditions": [{"type": "Complete", "status": "True"}]}
    cluster.patch(f"{JOBS}/ft-7/status", {"status": done})
    assert backend.run_task(tune()) == TaskState("succeeded", "finished")
    assert len(cluster.api.sent("POST", "jobs")) == 1  # a finished task is not run again


def test_a_queued_job_waits_in_its_kueue_queue_until_admitted(cluster: Cluster, backend: KubernetesBackend) -> None:
    state = backend.run_task(tune(queue="team-a"))
    assert state == TaskState("pending", "queued in team-a: Kueue starts it when the queue's quota has room")
    (job,) = stored_jobs(cluster)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    assert_valid(job)

    cluster.patch(f"{JOBS}/ft-7", {"spec": {"suspend": False}})  # Kueue admits it
    reason = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason}
    start_pod(cluster, "ft-7", {"phase": "Pending", "conditions": [unschedulable]})
    assert backend.run_task(tune(queue="team-a")) == TaskState("pending", f"no node can take it: {reason}")


def test_an_oom_killed_task_fails_saying_so_with_its_last_log_lines(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    assert cluster.api is not None
    backend.run_task(tune())
    killed = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    pod = start_pod(cluster, "ft-7", {"phase": "Failed", "containerStatuses": [
        {"name": "task", "image": "cove/fine-tune:0.1.0", "imageID": "", "ready": False, "restartCount": 0,
         "state": killed},
    ]})  # fmt: skip
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff limit"}
    cluster.patch(f"{JOBS}/ft-7/status", {"status": {"failed": 1, "conditions": [failed]}})
    cluster.api[f"get {PODS}/{pod}/log"] << "loading Qwen/Qwen2.5-7B\nstep 12/400 loss 1.93\n"

    state = backend.run_task(tune())
    assert state == TaskState(
        "failed", "out of memory (OOMKilled): the process used more than its memory limit (32768Mi)",
        exit_code=137, log_tail=("loading Qwen/Qwen2.5-7B", "step 12/400 loss 1.93"),
    )  # fmt: skip
    assert backend.task_logs("ft-7") == ["loading Qwen/Qwen2.5-7B", "step 12/400 loss 1.93"]


def test_tasks_are_listed_apart_from_builds_and_servers_and_stopped(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    assert cluster.api is not None
    backend.observe()  # as the controller's pass does: the Jobs are listed once for every task it reports
    backend.run_task(tune("ft-1"))
    backend.run_task(tune("ft-2"))
    assert backend.tasks() == {"ft-1", "ft-2"}
    build = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"containers": []}}},
             "metadata": {"name": "build-1", "labels": {"app.kubernetes.io/managed-by": "cove",
                                                        "app.kubernetes.io/component": "image-build"}}}  # fmt: skip
    cluster.create(JOBS, build)
    backend.observe()
    assert backend.tasks() == {"ft-1", "ft-2"}
    assert backend.names() == set()  # tasks are not deployments

    assert backend.stop_task("ft-1") is True
    (deleted,) = cluster.api.sent("DELETE", "jobs")
    assert deleted["propagationPolicy"] == "Background"  # its pods go after it
    assert {j["metadata"]["name"] for j in stored_jobs(cluster)} == {"ft-2", "build-1"}
    backend.observe()
    assert backend.tasks() == {"ft-2"}
    assert backend.stop_task("ft-1") is True  # already gone
    assert backend.task_logs("ft-1") == []


def test_a_task_name_that_cannot_name_a_job_is_refused(backend: KubernetesBackend) -> None:
    with pytest.raises(InvalidSpec) as refused:
        backend.run_task(tune("Fine_Tune 7"))
    assert "is not a DNS label" in refused.value.message
