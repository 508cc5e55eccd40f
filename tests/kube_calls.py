"""What Cove's server asks of a Kubernetes API, as RBAC sees it: every request the official client sends to the
emulator (tests/fakes/kubeapi.py) while a representative scenario runs, turned into (namespace, apiGroup,
resource, verb), so the chart's Roles can be checked against the code instead of a list kept by hand.

The scenario (``server_calls``) drives every verb of the Kubernetes backend and the leader Lease: a deployment with
autoscaling (an HPA) and a disruption budget, scaled and changed; one whose Deployment was removed by hand, made
again (its Service and Secret exist: created, then patched); read by a backend that did not observe the namespace
first; logs; a fine-tune Job that fails (its log read), stopped; an image build in the build namespace whose Job
was removed by hand, then fails (its log read); deletes and orphan cleanup (``names``); pool capacity from nodes;
the Lease taken, renewed and given up."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kubernetes import client as k8s

from studio.backends.base import BuildSpec, TaskSpec, WorkloadSpec
from studio.backends.kubernetes.backend import KubernetesBackend
from studio.backends.kubernetes.client import KubeClient, connect
from studio.leadership import LeaseLock
from studio.values import Autoscale, Resources
from tests.conftest import make_settings
from tests.fakes.kubeapi import Call, Cluster

Permission = tuple[str, str, str, str]  # (namespace, "" when cluster-scoped; apiGroup; resource[/sub]; verb)


def permission_of(call: Call) -> Permission:
    """The RBAC request attributes of one API call, as the API server's authorizer derives them: the group from
    the path (``/api/v1`` is the core group ""), the resource and subresource, and the verb from the method (GET
    of a name: get; of a collection: list, or watch with ``watch``; POST: create; PUT: update; PATCH: patch;
    DELETE of a name: delete, of a collection: deletecollection)."""
    parts = [p for p in call.path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"not a resource path: {call.path}")
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""
    watching = call.query.get("watch", "").lower() in {"true", "1"}
    verb = {
        "GET": "watch" if watching else ("get" if name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[call.method]
    return namespace, group, f"{resource}/{sub}" if sub else resource, verb


def _spec(**overrides: object) -> WorkloadSpec:
    values: dict[str, object] = {
        "name": "chat", "runtime": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct", "model_revision": "abc123",
        "image": "docker.io/vllm/vllm-openai:v0.11.0", "resources": Resources(cpu=8, memory_mib=32768, gpus=1),
        "replicas": 2, "pool": "a100", "node_selector": (("cove.dev/pool", "a100"),),
        "autoscale": Autoscale(min_replicas=2, max_replicas=4, target_inflight=8),
    }  # fmt: skip
    return WorkloadSpec(**(values | overrides))  # type: ignore[arg-type]


def server_calls(home: Path, *, namespace: str, build_namespace: str) -> set[Permission]:
    """Run the scenario of the module docstring against a fresh emulator; the permissions its calls needed."""
    with Cluster() as cluster:
        assert cluster.api is not None
        api = cluster.api
        settings = make_settings(
            home, backend="kubernetes", kube_namespace=namespace, models_pvc="cove-models", autoscaler="hpa",
            registry="registry.example.com/ml", registry_secret="ml-push", build_namespace=build_namespace,
        )  # fmt: skip
        backend = KubernetesBackend(settings, KubeClient(connect(host=cluster.url), namespace))
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "labels": {"cove.dev/pool": "a100"}},
                "status": {"allocatable": {"cpu": "96", "memory": "1031168Mi", "nvidia.com/gpu": "8"}}}  # fmt: skip
        api.objects[api.resource("", "v1", "nodes"), None, "gpu-1"] = node
        try:
            # a deployment with an HPA and a PDB, then scaled and changed, as the controller's passes do
            backend.observe()
            backend.apply(_spec())
            cluster.settle()
            backend.observe()
            newer = "docker.io/vllm/vllm-openai:v0.11.1"
            backend.apply(_spec(image=newer, autoscale=Autoscale(min_replicas=2, max_replicas=6)))
            backend.observe()
            backend.apply(_spec(image=newer, autoscale=None, replicas=3))
            cluster.settle()
            # its Deployment removed by hand: made again, its Service and key Secret patched as they exist
            cluster.delete(f"/apis/apps/v1/namespaces/{namespace}/deployments/chat")
            backend.observe()
            backend.apply(_spec(model_revision="def456"))
            # a backend that has not observed the namespace reads each object by name
            fresh = KubernetesBackend(settings, KubeClient(connect(host=cluster.url), namespace))
            fresh.apply(_spec(model_revision="def456"))
            cluster.settle()
            api[f"get /api/v1/namespaces/{namespace}/pods/chat-0/log"] << "serving\n"
            backend.status("chat")
            backend.logs("chat")
            backend.capacity()
            # a fine-tune that fails (its log read), then stopped
            task = TaskSpec(name="tune-1", command=("python", "-m", "tune"), workdir="/models/tune-1")
            backend.observe()
            backend.run_task(task)
            cluster.finish_jobs("failed")
            api[f"get /api/v1/namespaces/{namespace}/pods/tune-1-x1/log"] << "out of patience\n"
            backend.observe()
            backend.run_task(task)
            fresh.task_logs("tune-1")
            backend.stop_task("tune-1")
            backend.tasks()
            # an image build whose Job was removed by hand (made again, its Dockerfile Secret patched), that fails
            # in Kaniko (its log read, its Dockerfile Secret removed)
            build = BuildSpec(name="fa:1", destination="registry.example.com/ml/fa:1", dockerfile="FROM scratch\n")
            backend.build(build)
            name = next(j["metadata"]["name"] for j in api.stored("jobs", build_namespace))
            cluster.delete(f"/apis/batch/v1/namespaces/{build_namespace}/jobs/{name}")
            backend.build(build)
            api[f"get /api/v1/namespaces/{build_namespace}/pods/{name}-x1/log"] << "error building image\n"
            cluster.finish_jobs("failed")
            backend.build(build)
            backend.build(replace(build, attempt=2))  # a rebuild: a new Job
            # orphan cleanup: what runs that the database no longer has, deleted
            for orphan in fresh.names():
                while not fresh.delete(orphan):
                    cluster.settle()
            # the leader Lease: taken, renewed, given up
            lease = LeaseLock(k8s.CoordinationV1Api(connect(host=cluster.url)), namespace=namespace,
                              name="cove-controller", me="a", duration_s=10)  # fmt: skip
            assert lease.acquire()
            assert lease.renew()
            lease.release()
        finally:
            backend.close(stop_workloads=False)
        return {permission_of(call) for call in api.calls()}
