"""KubernetesBackend against a Kubernetes API (kmock's emulator, tests/fakes/kubeapi.py) through the official client:
create, patch, status, scale, logs and delete, with the test playing the Deployment controller and the kubelet
(pods become ready, are OOMKilled, stay Pending for lack of GPUs). Every object sent is schema-validated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.backends.base import WorkloadSpec
from studio.backends.clusters import make_backend
from studio.backends.kubernetes.backend import KubernetesBackend
from studio.backends.kubernetes.client import KubeClient, connect
from studio.bootstrap import open_studio
from studio.controller import derive_status
from studio.errors import BackendUnavailable, Conflict, InvalidSpec
from studio.runtimes import upstream_key
from studio.sealing import studio_key
from studio.services import pools
from studio.values import Resources, Status
from tests.conftest import make_settings
from tests.fakes.kubeapi import Cluster
from tests.schemas import assert_valid, restricted_problems

NS = "models"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


@pytest.fixture
def backend(cluster: Cluster, tmp_path: Path) -> Iterator[KubernetesBackend]:
    settings = make_settings(tmp_path, models_pvc="cove-models")
    made = KubernetesBackend(settings, KubeClient(connect(host=cluster.url), NS))
    yield made
    made.close(stop_workloads=False)


def spec(**overrides: object) -> WorkloadSpec:
    values: dict[str, object] = {
        "name": "chat",
        "runtime": "vllm",
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "model_revision": "abc123",
        "image": "docker.io/vllm/vllm-openai:v0.11.0",
        "resources": Resources(cpu=8, memory_mib=32768, gpus=1),
        "replicas": 1,
        "pool": "a100",
        "node_selector": (("cove.dev/pool", "a100"),),
    }
    return WorkloadSpec(**(values | overrides))  # type: ignore[arg-type]


def sent(cluster: Cluster, method: str, plural: str) -> list[dict[str, object]]:
    assert cluster.api is not None
    return cluster.api.sent(method, plural)


def test_a_deployment_becomes_ready_with_one_endpoint_per_pod(cluster: Cluster, backend: KubernetesBackend) -> None:
    first = backend.apply(spec(replicas=2))
    assert [r.phase for r in first.replicas] == []  # nothing runs before the controllers act

    cluster.settle("run")
    status = backend.apply(spec(replicas=2))
    assert [r.phase for r in status.replicas] == ["ready", "ready"]
    assert {r.endpoint for r in status.replicas} == {"http://10.42.0.10:8000", "http://10.42.0.11:8000"}
    assert status.upstream_model == "chat"
    observed = derive_status(replicas=2, workload=status, failure_threshold=3)
    assert observed.status == Status.READY

    created = {plural: sent(cluster, "POST", plural) for plural in ("deployments", "services", "poddisruptionbudgets")}
    assert {k: len(v) for k, v in created.items()} == {"deployments": 1, "services": 1, "poddisruptionbudgets": 1}
    # the key its model servers ask callers for: the one the gateway derives from the studio's key, and no other
    assert cluster.api is not None
    (key,) = cluster.api.stored("secrets")
    assert key["metadata"]["name"] == "chat-key"
    assert_valid(key)
    assert key["stringData"] == {"key": upstream_key(studio_key(backend.settings), "chat")}
    assert_valid(*(m for made in created.values() for m in made))  # type: ignore[misc]
    pod_spec = created["deployments"][0]["spec"]["template"]["spec"]  # type: ignore[index]
    assert restricted_problems(pod_spec) == []
    assert sent(cluster, "PATCH", "deployments") == []  # nothing changed: nothing written


def test_scaling_and_a_changed_spec_patch_the_deployment(cluster: Cluster, backend: KubernetesBackend) -> None:
    backend.apply(spec())
    cluster.settle("run")
    backend.apply(spec(replicas=3))
    cluster.settle("run")
    assert len(backend.apply(spec(replicas=3)).ready) == 3

    backend.apply(spec(replicas=3, args=("--max-model-len", "4096")))
    patches = sent(cluster, "PATCH", "deployments")
    assert [p["spec"]["replicas"] for p in patches] == [3, 3]  # type: ignore[index]
    args = patches[-1]["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert args[-6:-2] == ["--max-model-len", "4096", "--gpu-memory-utilization", "0.90"]

    backend.apply(spec(replicas=1))
    cluster.settle("run")
    assert len(backend.apply(spec(replicas=1)).replicas) == 1


def test_an_oom_killed_runtime_is_said_in_plain_words(cluster: Cluster, backend: KubernetesBackend) -> None:
    backend.apply(spec())
    cluster.settle("oom")
    status = backend.apply(spec())
    (replica,) = status.replicas
    assert replica.phase == "backoff"
    assert replica.message == "the runtime ran out of memory (OOMKilled): give the deployment more memory"
    observed = derive_status(replicas=1, workload=status, failure_threshold=3)
    assert observed.status == Status.FAILED
    assert observed.message.startswith("the runtime ran out of memory (OOMKilled)")


def test_no_gpu_free_leaves_it_pending_with_the_schedulers_reason(cluster: Cluster, backend: KubernetesBackend) -> None:
    backend.apply(spec())
    cluster.settle("unschedulable", reason="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    observed = derive_status(replicas=1, workload=backend.apply(spec()), failure_threshold=3)
    assert observed.status == Status.PENDING
    assert observed.message == "no node can take it: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."


def test_delete_removes_everything_and_names_lists_what_runs(cluster: Cluster, backend: KubernetesBackend) -> None:
    backend.apply(spec(replicas=2))
    backend.apply(spec(name="embed", replicas=1))
    cluster.settle("run")
    assert backend.names() == {"chat", "embed"}

    assert backend.delete("chat") is False  # its pods are still going
    cluster.settle()
    assert backend.delete("chat") is True
    assert backend.names() == {"embed"}
    assert cluster.api is not None
    assert [s["metadata"]["name"] for s in cluster.api.stored("services")] == ["embed"]
    assert cluster.api.stored("poddisruptionbudgets") == []
    assert [s["metadata"]["name"] for s in cluster.api.stored("secrets")] == ["embed-key"]


def test_logs_come_from_the_newest_pod(cluster: Cluster, backend: KubernetesBackend) -> None:
    assert cluster.api is not None
    backend.apply(spec())
    cluster.settle("run")
    cluster.api["get /api/v1/namespaces/models/pods/chat-0/log"] << "loading weights\nready\n"
    assert backend.logs("chat", tail=50) == ["loading weights", "ready"]
    assert backend.logs("missing") == []


def test_capacity_adds_up_the_nodes_of_each_pool(cluster: Cluster, backend: KubernetesBackend) -> None:
    assert cluster.api is not None

    def node(name: str, pool: str | None, gpus: int, unschedulable: bool = False) -> dict[str, object]:
        labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"}
        if pool:
            labels["cove.dev/pool"] = pool
        return {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": "31500m", "memory": "257652Mi", "nvidia.com/gpu": str(gpus)}},
        }  # fmt: skip

    for n in (node("a-1", "a100", 8), node("a-2", "a100", 8), node("a-3", "a100", 8, True), node("x", None, 0)):
        cluster.api.objects[cluster.api.resource("", "v1", "nodes"), None, n["metadata"]["name"]] = n  # type: ignore[index]
    (pool,) = backend.capacity()
    assert (pool.name, pool.gpu_count, pool.cpu_cores, pool.memory_mib) == ("a100", 16, 63.0, 2 * 257652)
    assert (pool.gpu_model, pool.gpu_memory_mib) == ("NVIDIA-A100-SXM4-80GB", 81920)


def test_an_unreachable_api_is_a_backend_error_with_what_to_do(tmp_path: Path) -> None:
    gone = KubernetesBackend(make_settings(tmp_path), KubeClient(connect(host="http://127.0.0.1:9"), NS, timeout=2))
    with pytest.raises(BackendUnavailable) as raised:
        gone.apply(spec())
    assert "the Kubernetes API does not answer" in raised.value.message
    assert "COVE_KUBECONFIG" in raised.value.hint


def test_the_server_builds_the_backend_from_a_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        f"clusters: [{{name: lab, cluster: {{server: '{cluster.url}'}}}}]"
        "\ncontexts: [{name: lab, context: {cluster: lab, user: lab}}]\nusers: [{name: lab, user: {token: t}}]\n"
    )
    settings = make_settings(tmp_path, backend="kubernetes", kubeconfig=str(kubeconfig), kube_namespace=NS)
    made = make_backend(settings)
    assert isinstance(made, KubernetesBackend)
    made.apply(spec())
    assert cluster.api is not None
    assert [d["metadata"]["namespace"] for d in cluster.api.stored("deployments")] == [NS]
    made.close(stop_workloads=True)
    assert [d["metadata"]["name"] for d in cluster.api.stored("deployments")] == ["chat"]  # workloads outlive Cove


def test_pools_from_the_settings_are_made_at_start_and_bad_ones_refused(tmp_path: Path) -> None:
    gpu = {
        "name": "a100", "purpose": "serve", "sharing": "whole", "gpuModel": "A100", "gpuCount": 16,
        "gpuMemoryMib": 81920, "cpuCores": 64, "memoryMib": 524288, "groups": ["ml"],
        "nodeSelector": {"cove.dev/pool": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }  # fmt: skip
    settings = make_settings(tmp_path, backend="kubernetes", pools=[gpu])
    db = open_studio(settings)
    try:
        (pool,) = [u.pool for u in pools.list_pools(db=db)]  # no pool of the control plane's own machine
        assert (pool.name, pool.gpu_count, pool.groups, pool.node_selector) == ("a100", 16, ["ml"], gpu["nodeSelector"])
        assert pool.tolerations == gpu["tolerations"]
    finally:
        db.dispose()

    with pytest.raises(InvalidSpec) as raised:
        open_studio(make_settings(tmp_path / "bad", pools=[gpu | {"purpose": "gaming", "gpuCount": -1}]))
    assert raised.value.message.startswith("pool 'a100' in COVE_POOLS is invalid: purpose: Input should be")
    assert "gpuCount: Input should be greater than or equal to 0" in raised.value.message


def test_two_releases_in_one_namespace_see_and_clean_up_only_their_own(cluster: Cluster, tmp_path: Path) -> None:
    def release(name: str) -> KubernetesBackend:
        settings = make_settings(tmp_path / name, models_pvc="cove-models", release=name)
        return KubernetesBackend(settings, KubeClient(connect(host=cluster.url), NS))

    first, second = release("first"), release("second")
    try:
        first.apply(spec(name="chat"))
        second.apply(spec(name="code"))
        cluster.settle("run")
        for backend in (first, second):
            backend.observe()
        assert first.names() == {"chat"}
        assert second.names() == {"code"}
        (code,) = [d for d in cluster.api.stored("deployments", NS) if d["metadata"]["name"] == "code"]  # type: ignore[union-attr]
        assert code["metadata"]["labels"]["cove.dev/release"] == "second"
        # a deployment of the same name in the other release is refused, and deleting it there touches nothing here
        with pytest.raises(Conflict, match="belongs to the Cove release 'first'"):
            second.apply(spec(name="chat"))
        assert second.delete("chat")
        first.observe()
        assert first.names() == {"chat"}
        assert first.status("chat").ready
    finally:
        first.close(stop_workloads=False)
        second.close(stop_workloads=False)


def test_objects_made_before_releases_were_labelled_stay_the_installations(
    backend: KubernetesBackend, cluster: Cluster
) -> None:
    backend.apply(spec(name="old"))
    assert cluster.api is not None
    cluster.patch(
        f"/apis/apps/v1/namespaces/{NS}/deployments/old", {"metadata": {"labels": {"cove.dev/release": None}}}
    )
    (old,) = cluster.api.stored("deployments", NS)
    assert "cove.dev/release" not in old["metadata"]["labels"]
    backend.observe()
    assert backend.names() == {"old"}
