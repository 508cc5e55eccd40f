"""The pure Kubernetes pieces shared by the notebook spawner and the model-server backend: quantities, GPU
resources (whole devices or HAMi slices), pool placement, the restricted security context, and pod status in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from studio.backends.base import BuildState, ReplicaStatus, WorkloadSpec
from studio.backends.kubernetes.conditions import build_state, failed_step, replica_status
from studio.backends.kubernetes.manifests import (
    JobSpec,
    Target,
    autoscaler,
    claim,
    disruption_budget,
    image_build,
    job,
    model_server,
    secret,
    service,
)
from studio.pods import (
    cpu_quantity,
    gpu_limits,
    pending_reason,
    placement,
    resource_requirements,
    restricted_container_context,
    restricted_pod_context,
)
from studio.runtimes import container_launch
from studio.values import Resources
from tests.schemas import assert_valid, restricted_problems


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


# ------------------------------------------------------------------------------------------------ builders

TARGET = Target(namespace="models", models_pvc="cove-models", start_timeout_s=600)
TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
LABELS = {
    "app.kubernetes.io/name": "chat",
    "app.kubernetes.io/instance": "chat",
    "app.kubernetes.io/component": "model-server",
    "app.kubernetes.io/managed-by": "cove",
}
SELECTOR = {"app.kubernetes.io/instance": "chat", "app.kubernetes.io/managed-by": "cove"}


def vllm_spec(**overrides: Any) -> WorkloadSpec:
    values: dict[str, Any] = {
        "name": "chat",
        "runtime": "vllm",
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "model_revision": "abc123",
        "image": "docker.io/vllm/vllm-openai:v0.11.0",
        "args": ("--max-model-len", "8192"),
        "resources": Resources(cpu=8, memory_mib=65536, gpus=2),
        "replicas": 2,
        "pool": "a100",
        "node_selector": (("cove.dev/pool", "a100"),),
        "tolerations": (TAINT,),
    }
    return WorkloadSpec(**(values | overrides))


def test_a_vllm_deployment_in_full() -> None:
    spec = vllm_spec()
    got = model_server(spec, container_launch(spec), TARGET, replicas=2)
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
    assert got == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "chat", "namespace": "models", "labels": LABELS, "annotations": {"cove.dev/spec": spec.fingerprint},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": SELECTOR},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": LABELS, "annotations": {"cove.dev/spec": spec.fingerprint}},
                "spec": {
                    "containers": [
                        {
                            "name": "runtime",
                            "image": "docker.io/vllm/vllm-openai:v0.11.0",
                            "command": ["python3"],
                            "args": [
                                "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen2.5-7B-Instruct",
                                "--served-model-name", "chat", "--host", "0.0.0.0", "--port", "8000",
                                "--revision", "abc123", "--max-model-len", "8192",
                                "--gpu-memory-utilization", "0.90", "--tensor-parallel-size", "2",
                                "--api-key", "$(COVE_UPSTREAM_KEY)",  # only the gateway has it
                            ],
                            "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                            "env": [
                                {"name": "HF_HUB_CACHE", "value": "/data/models"},
                                {"name": "HF_HUB_OFFLINE", "value": "1"},
                                {"name": "OMP_NUM_THREADS", "value": "8"},
                                {"name": "PYTHONUNBUFFERED", "value": "1"},
                                {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
                                {
                                    "name": "COVE_UPSTREAM_KEY",
                                    "valueFrom": {"secretKeyRef": {"name": "chat-key", "key": "key"}},
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "8", "memory": "65536Mi"},
                                "limits": {"cpu": "8", "memory": "65536Mi", "nvidia.com/gpu": "2"},
                            },
                            "volumeMounts": [
                                {"name": "models", "mountPath": "/data/models", "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                                {"name": "shm", "mountPath": "/dev/shm"},
                            ],
                            "startupProbe": probe | {"periodSeconds": 10, "failureThreshold": 60},
                            "readinessProbe": probe | {"periodSeconds": 5, "failureThreshold": 3},
                            "livenessProbe": probe | {"periodSeconds": 15, "failureThreshold": 4},
                            "securityContext": {
                                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                                "readOnlyRootFilesystem": True,
                            },
                        }
                    ],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": "cove-models", "readOnly": True}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16384Mi"}},
                    ],
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "nodeSelector": {"cove.dev/pool": "a100"},
                    "tolerations": [TAINT],
                },
            },
        },
    }  # fmt: skip
    assert_valid(got)
    assert restricted_problems(got["spec"]["template"]["spec"]) == []


def test_sglang_transformers_and_custom_images_run_their_own_commands() -> None:
    sglang = vllm_spec(runtime="sglang", image="docker.io/lmsysorg/sglang:v0.5.0", args=())
    args = model_server(sglang, container_launch(sglang), TARGET)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["-m", "sglang.launch_server", "--model-path"]
    assert args[-6:] == ["--mem-fraction-static", "0.85", "--tp-size", "2", "--api-key", "$(COVE_UPSTREAM_KEY)"]

    cpu = vllm_spec(runtime="transformers", image="cove/cove:0.1.0", args=(), resources=Resources(cpu=2))
    box = model_server(cpu, container_launch(cpu), TARGET)["spec"]["template"]["spec"]["containers"][0]
    assert box["args"][:4] == ["-m", "transformers.cli.transformers", "serve", "Qwen/Qwen2.5-7B-Instruct@abc123"]
    assert "--device" in box["args"]
    assert box["args"][box["args"].index("--device") + 1] == "cpu"
    assert "--api-key" not in box["args"]  # `transformers serve` has no such option: the NetworkPolicy guards it
    assert "nvidia.com/gpu" not in box["resources"]["limits"]

    custom = vllm_spec(runtime="custom", image="registry.example.com/team/server:1.2", args=("--flag",))
    deployment = model_server(custom, container_launch(custom), TARGET)
    box = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in box
    assert box["args"] == ["--flag"]
    assert {"name": "COVE_SERVED_MODEL_NAME", "value": "chat"} in box["env"]
    key = {"name": "COVE_UPSTREAM_KEY", "valueFrom": {"secretKeyRef": {"name": "chat-key", "key": "key"}}}
    assert key in box["env"]  # a custom server may check callers against it
    assert_valid(deployment)


def test_a_hami_slice_and_a_folder_in_the_model_cache() -> None:
    spec = vllm_spec(
        resources=Resources(cpu=2, memory_mib=8192, gpu_memory_mib=12288, gpu_cores=30),
        model="/home/cove/models/models--org--m/snapshots/r1",
        model_revision=None,
    )
    launch = container_launch(spec, local_models_dir=Path("/home/cove/models"))
    got = model_server(spec, launch, TARGET, replicas=None)
    box = got["spec"]["template"]["spec"]["containers"][0]
    assert box["resources"]["limits"] == {
        "cpu": "2", "memory": "8192Mi",
        "nvidia.com/gpu": "1", "nvidia.com/gpumem": "12288", "nvidia.com/gpucores": "30",
    }  # fmt: skip
    assert got["spec"]["template"]["metadata"]["annotations"] == {
        "cove.dev/spec": spec.fingerprint,
        "hami.io/gpu-scheduler-policy": "binpack",  # HAMi packs slices onto the fullest card, as admission does
    }
    assert box["args"][box["args"].index("--model") + 1] == "/data/models/models--org--m/snapshots/r1"
    assert "--tensor-parallel-size" not in box["args"]
    assert "replicas" not in got["spec"]  # left to an autoscaler
    assert_valid(got)


def test_a_job_on_a_hami_slice_asks_for_bin_packing_and_one_on_a_whole_gpu_does_not() -> None:
    sliced = job(JobSpec(name="ft", image="img", args=(), resources=Resources(gpu_memory_mib=8192)), TARGET)
    whole = job(JobSpec(name="ft", image="img", args=(), resources=Resources(gpus=1)), TARGET)

    assert sliced["spec"]["template"]["metadata"]["annotations"] == {"hami.io/gpu-scheduler-policy": "binpack"}
    assert "annotations" not in whole["spec"]["template"]["metadata"]
    assert "annotations" not in sliced["metadata"]  # on the pod, where HAMi's scheduler reads it


def test_service_autoscaler_budget_claim_and_secret() -> None:
    svc = service("chat", TARGET)
    assert svc["spec"]["selector"] == SELECTOR
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    hpa = autoscaler("chat", TARGET, lo=1, hi=4, inflight_per_replica=2.5)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "External",
            "external": {  # the gateway's gauge of this deployment, per replica
                "metric": {
                    "name": "cove_gateway_requests_in_flight",
                    "selector": {"matchLabels": {"deployment": "chat"}},
                },
                "target": {"type": "AverageValue", "averageValue": "2500m"},
            },
        }
    ]
    pdb = disruption_budget("chat", TARGET)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}
    pvc = claim("cove-models", TARGET, size="500Gi", storage_class="nfs", shared=True)
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "500Gi"}}, "storageClassName": "nfs",
    }  # fmt: skip
    token = secret("hf-token", TARGET, {"token": "hf_x"})
    assert token["stringData"] == {"token": "hf_x"}
    assert_valid(svc, hpa, pdb, pvc, token)


def test_a_fine_tune_job_and_an_image_build() -> None:
    tune = job(
        JobSpec(
            name="tune-chat-1", image="cove/fine-tune:0.1.0", args=("--base", "Qwen/Qwen2.5-0.5B"),
            resources=Resources(cpu=4, memory_mib=32768, gpus=1), node_selector=(("cove.dev/pool", "train"),),
            volumes=(
                ("models", "cove-models", "/data/models", False), ("datasets", "cove-datasets", "/data/datasets", True),
            ),
            component="fine-tune",
        ),
        TARGET,
    )  # fmt: skip
    pod = tune["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert tune["spec"]["backoffLimit"] == 0
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["volumes"][1] == {
        "name": "datasets",
        "persistentVolumeClaim": {"claimName": "cove-datasets", "readOnly": True},
    }
    assert restricted_problems(pod) == []

    context, build = image_build(
        "build-server-1-2", TARGET, dockerfile="FROM python:3.11-slim\n",
        destination="registry.example.com/team/server:1.2", push_secret="registry-push",
        builder="gcr.io/kaniko-project/executor:v1.23.2", pusher="gcr.io/go-containerregistry/crane:v0.22.1",
    )  # fmt: skip
    assert context["stringData"] == {"Dockerfile": "FROM python:3.11-slim\n"}
    pod = build["spec"]["template"]["spec"]
    (kaniko,), (pusher,) = pod["initContainers"], pod["containers"]
    assert "--destination=registry.example.com/team/server:1.2" in kaniko["args"]
    assert {"--no-push", "--tar-path=/out/image.tar"} <= set(kaniko["args"])
    assert pusher["args"] == ["push", "/out/image.tar", "registry.example.com/team/server:1.2"]
    # only Kaniko (root, to unpack images) is outside "restricted"; the pusher, which holds the credentials, is not
    problems = restricted_problems(pod)
    assert problems
    assert all(p.startswith("build: ") for p in problems), problems
    assert pusher["securityContext"]["readOnlyRootFilesystem"] is True
    assert "push" in {m["name"] for m in pusher["volumeMounts"]}
    assert "push" not in {m["name"] for m in kaniko["volumeMounts"]}
    assert_valid(tune, context, build)
    anonymous = image_build(
        "b", TARGET, dockerfile="FROM x\n", destination="r/x:1", push_secret="", builder="k:1", pusher="c:1"
    )[1]["spec"]["template"]["spec"]
    assert [v["name"] for v in anonymous["volumes"]] == ["context", "out"]
    assert anonymous["containers"][0]["env"] == []


def build_pod(inits: dict[str, Any], mains: dict[str, Any], phase: str = "Running") -> dict[str, Any]:
    return {"status": {"phase": phase, "initContainerStatuses": [{"name": "build", "state": inits}],
                       "containerStatuses": [{"name": "push", "state": mains}]}}  # fmt: skip


def test_a_build_job_in_words_names_the_step_it_is_at_or_failed_in() -> None:
    started: dict[str, Any] = {"status": {}}
    failed: dict[str, Any] = {"status": {"failed": 1}}
    ok = {"terminated": {"exitCode": 0}}
    initializing = {"waiting": {"reason": "PodInitializing"}}
    assert build_state(started, None) == BuildState("pending", "waiting for the build to start")
    pulling = {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}
    assert build_state(started, build_pod(pulling, initializing, "Pending")) == BuildState(
        "pending", "build is waiting: ImagePullBackOff: not found"
    )
    assert build_state(started, build_pod({"running": {}}, initializing, "Pending")) == BuildState(
        "building", "building"
    )
    assert build_state(started, build_pod(ok, {"running": {}})) == BuildState(
        "building", "built; pushing to the registry"
    )
    kaniko_failed = build_pod({"terminated": {"exitCode": 1, "message": "RUN exited 2"}}, initializing, "Failed")
    assert build_state(failed, kaniko_failed) == BuildState("failed", "the build exited with code 1: RUN exited 2")
    assert failed_step(kaniko_failed) == "build"
    push_failed = build_pod(ok, {"terminated": {"exitCode": 1}}, "Failed")
    assert build_state(failed, push_failed).message.startswith(
        "built, but not pushed: the push to the registry exited with code 1"
    )
    assert failed_step(push_failed) == "push"
    assert failed_step(None) == ""
    assert build_state({"status": {"succeeded": 1}}, None) == BuildState("succeeded", "built and pushed")


def test_builders_are_deterministic_and_leave_their_inputs_alone() -> None:
    spec = vllm_spec()
    launch = container_launch(spec)
    first = model_server(spec, launch, TARGET, replicas=1)
    first["spec"]["template"]["spec"]["tolerations"][0]["key"] = "changed"
    first["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "99"
    assert spec.tolerations == (TAINT,)
    assert TAINT["key"] == "nvidia.com/gpu"
    assert model_server(spec, launch, TARGET, replicas=1) == model_server(
        vllm_spec(), container_launch(vllm_spec()), TARGET, replicas=1
    )


def pod(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "chat-0", **meta}, "status": status}


def waiting(reason: str, message: str = "", restarts: int = 0, last: dict[str, Any] | None = None) -> dict[str, Any]:
    box: dict[str, Any] = {"name": "runtime", "image": "vllm:v1", "ready": False, "restartCount": restarts,
                           "state": {"waiting": {"reason": reason, "message": message}}}  # fmt: skip
    if last:
        box["lastState"] = {"terminated": last}
    return {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [box]}


def test_each_pod_state_is_a_replica_phase_with_a_reason_in_words() -> None:
    ready = {"phase": "Running", "podIP": "10.0.0.7", "containerStatuses": [{"name": "r", "ready": True}]}
    assert replica_status(pod(ready), 0, port=8000) == ReplicaStatus(0, "ready", endpoint="http://10.0.0.7:8000")
    loading = {"phase": "Running", "podIP": "10.0.0.7", "containerStatuses": [{"name": "r", "ready": False}]}
    assert replica_status(pod(loading), 1, port=8000).phase == "starting"
    pulled = replica_status(pod(waiting("ImagePullBackOff", "manifest unknown")), 0, port=8000)
    assert (pulled.phase, pulled.message) == ("backoff", "the image vllm:v1 cannot be pulled: manifest unknown")
    crash = replica_status(pod(waiting("CrashLoopBackOff", restarts=4, last={"exitCode": 2})), 0, port=8000)
    assert (crash.phase, crash.failures, crash.restarts) == ("backoff", 4, 4)
    assert crash.message == "the runtime keeps exiting (code 2): see the deployment's logs"
    oom = replica_status(pod(waiting("CrashLoopBackOff", restarts=2, last={"reason": "OOMKilled"})), 0, port=8000)
    assert oom.message.startswith("the runtime ran out of memory")
    going = replica_status(pod(ready, deletionTimestamp="2026-11-23T00:00:00Z"), 0, port=8000)
    assert going.phase == "terminating"
    assert replica_status(pod(UNSCHEDULABLE["status"]), 0, port=8000).message.startswith("no node can take it")
    assert replica_status(pod({"phase": "Pending"}), 0, port=8000).message == "waiting for a node"
