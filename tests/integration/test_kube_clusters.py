"""The controller over Kubernetes clusters, each a Kubernetes API emulator (kmock, tests/fakes/kubeapi.py) reached
through the official client, with the test playing the cluster's controllers: clusters registered by kubeconfig
(a deployment runs on its pool's cluster; pools come from labelled nodes; an unreachable cluster is said on its
deployments), image builds from a Dockerfile (a Kaniko Job; deployments wait for the image), and HPAs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from studio.backends.kubernetes import client as kube_client
from studio.backends.kubernetes.backend import KubernetesBackend
from studio.backends.kubernetes.client import KubeClient, connect
from studio.bootstrap import open_studio
from studio.controller import Controller
from studio.db import Database, utcnow
from studio.errors import Conflict, InvalidSpec
from studio.logs import LogReader, deployment_logs
from studio.models import Cluster as ClusterRow
from studio.models import ClusterCreate, DeploymentCreate, ImageCreate, ModelCreate, PoolSpec
from studio.sealing import studio_key
from studio.services import clusters, deployments, images, models, pools
from studio.services.events import list_events
from studio.settings import Settings
from studio.values import Autoscale, BuildStatus, Resources, Status
from tests.conftest import make_settings
from tests.fakes.kubeapi import Cluster
from tests.integration.conftest import write_stub_model
from tests.people import ADMIN
from tests.schemas import assert_valid

NS = "cove"
GPU = {
    "name": "a100", "purpose": "serve", "sharing": "whole", "gpuModel": "A100", "gpuCount": 8, "gpuMemoryMib": 81920,
    "cpuCores": 64, "memoryMib": 524288, "nodeSelector": {"cove.dev/pool": "a100"},
}  # fmt: skip
ONE_GPU = Resources(cpu=4, memory_mib=16384, gpus=1)


@pytest.fixture
def home() -> Iterator[Cluster]:
    """The control plane's own cluster."""
    with Cluster() as running:
        yield running


@pytest.fixture
def east() -> Iterator[Cluster]:
    """A second cluster, registered by kubeconfig."""
    with Cluster() as running:
        yield running


class Studio:
    """The database and the controller of a Cove on Kubernetes (``home``), reconciling when told to."""

    def __init__(self, settings: Settings, home: Cluster, tmp_path: Path) -> None:
        self.settings = settings
        self.db = open_studio(settings)
        backend = KubernetesBackend(settings, KubeClient(connect(host=home.url), NS))
        self.controller = Controller(db=self.db, backend=backend, settings=settings)
        self.key = studio_key(settings)
        models.add_model(
            actor=ADMIN,
            db=self.db,
            data=ModelCreate(name="qwen", source=str(write_stub_model(tmp_path / "qwen"))),
            cache_dir=settings.models_dir,
        )

    def reconcile(self, passes: int = 1) -> None:
        for _ in range(passes):
            self.controller.reconcile()

    def deploy(self, name: str, pool: str = "a100", image: str = "vllm", **extra: object) -> None:
        data = DeploymentCreate(name=name, model="qwen", pool=pool, resources=ONE_GPU, image=image, **extra)  # type: ignore[arg-type]
        deployments.create_deployment(actor=ADMIN, db=self.db, data=data)

    def status(self, name: str) -> tuple[str, str]:
        got = deployments.get_deployment(actor=ADMIN, db=self.db, name=name)
        return got.status, got.message


@pytest.fixture
def studio(home: Cluster, tmp_path: Path) -> Iterator[Studio]:
    made = Studio(
        make_settings(tmp_path / "cove", backend="kubernetes", pools=[GPU], kube_namespace=NS), home, tmp_path
    )
    yield made
    made.controller.stop(stop_workloads=False)
    made.db.dispose()


def kubeconfig(url: str, *, context: str = "east") -> str:
    return (
        f"apiVersion: v1\nkind: Config\ncurrent-context: {context}\n"
        f"clusters: [{{name: {context}, cluster: {{server: '{url}'}}}}]\n"
        f"contexts: [{{name: {context}, context: {{cluster: {context}, user: ops}}}}]\n"
        "users: [{name: ops, user: {token: secret-token}}]\n"
    )


def add_node(cluster: Cluster, name: str, pool: str, gpus: int) -> None:
    assert cluster.api is not None
    labels = {"cove.dev/pool": pool, "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
              "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": str(gpus)}  # fmt: skip
    node = {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": "96", "memory": "1031168Mi", "nvidia.com/gpu": str(gpus)}},
    }  # fmt: skip
    cluster.api.objects[cluster.api.resource("", "v1", "nodes"), None, name] = node


def names_in(cluster: Cluster, plural: str, namespace: str | None = None) -> list[str]:
    assert cluster.api is not None
    return [o["metadata"]["name"] for o in cluster.api.stored(plural, namespace)]


# ------------------------------------------------------------------------------------------------ clusters


def test_a_registered_cluster_gets_its_pools_from_its_nodes_and_runs_their_deployments(
    studio: Studio, home: Cluster, east: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = clusters.add_cluster(
        actor=ADMIN,
        db=studio.db,
        key=studio.key,
        data=ClusterCreate(name="east", kubeconfig=kubeconfig(east.url), namespace="team"),
    )
    assert (added.context, added.server, added.namespace) == ("east", east.url, "team")
    assert "secret-token" not in added.model_dump_json()  # credentials are never shown
    add_node(east, "h100-1", "h100", 8)
    add_node(east, "h100-2", "h100", 8)

    studio.reconcile()
    h100 = {u.pool.name: u.pool for u in pools.list_pools(db=studio.db)}["h100"]
    assert (h100.cluster, h100.gpu_count, h100.gpu_model, h100.cpu_cores) == ("east", 16, "NVIDIA-H100-80GB-HBM3", 192)
    assert h100.node_selector == {"cove.dev/pool": "h100"}
    (listed,) = clusters.list_clusters(db=studio.db)
    assert listed.message == ""
    assert listed.checked_at is not None

    studio.deploy("chat-east", pool="h100")
    studio.deploy("chat-home", pool="a100", cluster="default")
    studio.reconcile()
    assert names_in(east, "deployments") == ["chat-east"]
    assert names_in(home, "deployments") == ["chat-home"]
    (made,) = east.api.stored("deployments") if east.api else []
    assert made["metadata"]["namespace"] == "team"
    assert made["spec"]["template"]["spec"]["nodeSelector"] == {"cove.dev/pool": "h100"}
    east.settle("run")
    studio.reconcile()
    assert studio.status("chat-east") == (Status.READY.value, "")
    assert deployments.get_deployment(actor=ADMIN, db=studio.db, name="chat-east").cluster == "east"
    assert east.api is not None
    east.api["get /api/v1/namespaces/team/pods/chat-east-0/log"] << "loading weights\nready\n"
    assert deployment_logs(settings=studio.settings, actor=ADMIN, db=studio.db, name="chat-east") == [
        "loading weights",
        "ready",
    ]
    connected: list[str] = []
    real_connect = kube_client.connect
    monkeypatch.setattr(kube_client, "connect", lambda **kw: connected.append(kw["context"]) or real_connect(**kw))
    reader = LogReader(settings=studio.settings, db=studio.db)  # as the studio UI keeps one
    for _ in range(3):
        assert reader.read("chat-east", actor=ADMIN) == ["loading weights", "ready"]
    reader.close()
    assert connected == ["east"]  # one client for every read, not one per read

    with pytest.raises(InvalidSpec) as wrong:
        studio.deploy("misplaced", pool="h100", cluster="default")
    assert wrong.value.message == "pool 'h100' is on cluster 'east', not 'default'"
    with pytest.raises(Conflict) as busy:
        clusters.remove_cluster(actor=ADMIN, db=studio.db, name="east")
    assert busy.value.message == "cluster 'east' still runs chat-east"

    deployments.delete_deployment(actor=ADMIN, db=studio.db, name="chat-east")
    studio.reconcile()
    east.settle()
    studio.reconcile()
    assert names_in(east, "deployments") == []
    clusters.remove_cluster(actor=ADMIN, db=studio.db, name="east")
    assert {u.pool.name for u in pools.list_pools(db=studio.db)} == {"a100"}
    assert names_in(home, "deployments") == ["chat-home"]  # the other cluster's workloads are left alone


def test_an_unreachable_cluster_is_said_on_its_deployments_and_the_others_go_on(studio: Studio, home: Cluster) -> None:
    clusters.add_cluster(
        actor=ADMIN,
        db=studio.db,
        key=studio.key,
        data=ClusterCreate(name="west", kubeconfig=kubeconfig("http://127.0.0.1:9", context="west")),
    )
    pools.sync_configured_pools(
        db=studio.db,
        specs=[PoolSpec(name="west-gpu", sharing="whole", gpuCount=4, cpuCores=64, memoryMib=262144, cluster="west")],
    )  # type: ignore[call-arg]
    studio.deploy("far", pool="west-gpu")
    studio.deploy("near")
    studio.reconcile()

    status, message = studio.status("far")
    assert status == Status.PENDING.value
    assert message.startswith("cluster west: the Kubernetes API does not answer")
    (west,) = clusters.list_clusters(db=studio.db)
    assert west.message.startswith("the Kubernetes API does not answer")
    reasons = [e.reason for e in list_events(db=studio.db, kind=deployments.KIND, name="far")]
    assert reasons.count("Unreachable") == 1
    studio.reconcile()  # said once, not on every pass
    assert [e.reason for e in list_events(db=studio.db, kind=deployments.KIND, name="far")].count("Unreachable") == 1
    assert names_in(home, "deployments") == ["near"]


def test_a_kubeconfig_is_checked_when_registered(studio: Studio) -> None:
    with pytest.raises(InvalidSpec) as no_context:
        clusters.add_cluster(
            actor=ADMIN,
            db=studio.db,
            key=studio.key,
            data=ClusterCreate(name="lab", kubeconfig=kubeconfig("https://k8s.lab:6443"), context="prod"),
        )
    assert no_context.value.message == "the kubeconfig has no context named 'prod'"
    assert no_context.value.hint == "choose one of its contexts: east"
    with pytest.raises(InvalidSpec, match="no contexts or clusters"):
        clusters.add_cluster(
            actor=ADMIN,
            db=studio.db,
            key=studio.key,
            data=ClusterCreate(name="lab", kubeconfig="apiVersion: v1\nkind: Config\n"),
        )
    with pytest.raises(ValueError, match="names the control plane's own backend"):
        ClusterCreate(name="default", kubeconfig=kubeconfig("https://k8s.lab:6443"))
    clusters.add_cluster(
        actor=ADMIN,
        db=studio.db,
        key=studio.key,
        data=ClusterCreate(name="lab", kubeconfig=kubeconfig("https://k8s.lab:6443")),
    )
    with pytest.raises(Conflict):
        clusters.add_cluster(
            actor=ADMIN,
            db=studio.db,
            key=studio.key,
            data=ClusterCreate(name="lab", kubeconfig=kubeconfig("https://k8s.lab:6443")),
        )


# ------------------------------------------------------------------------------------------------ image builds


DOCKERFILE = "FROM docker.io/vllm/vllm-openai:v0.11.0\nRUN pip install --no-cache-dir flash-attn==2.8.3\n"


@pytest.fixture
def builder(home: Cluster, tmp_path: Path) -> Iterator[Studio]:
    settings = make_settings(
        tmp_path / "cove", backend="kubernetes", pools=[GPU], kube_namespace=NS, registry="registry.example.com/ml",
        registry_secret="ml-push", build_namespace="cove-builds",
    )  # fmt: skip
    made = Studio(settings, home, tmp_path)
    yield made
    made.controller.stop(stop_workloads=False)
    made.db.dispose()


def test_an_image_with_a_dockerfile_is_built_in_the_cluster_before_its_deployments_start(
    builder: Studio, home: Cluster
) -> None:
    image = images.add_image(
        actor=ADMIN,
        db=builder.db,
        data=ImageCreate(name="vllm-fa", version="0.11.0-1", runtime="vllm", dockerfile=DOCKERFILE),  # type: ignore[arg-type]
        registry=builder.settings.registry,
    )
    assert (image.reference, image.build_status) == ("registry.example.com/ml/vllm-fa:0.11.0-1", "Pending")
    builder.deploy("chat", image="vllm-fa")
    builder.reconcile()

    assert builder.status("chat") == (
        Status.PENDING.value, "waiting for its image registry.example.com/ml/vllm-fa:0.11.0-1 to be built"
    )  # fmt: skip
    assert names_in(home, "deployments") == []
    (job,) = home.api.stored("jobs", "cove-builds") if home.api else []
    (context,) = home.api.stored("secrets", "cove-builds") if home.api else []
    assert_valid(job, context)
    pod = job["spec"]["template"]["spec"]
    (kaniko,), (pusher,) = pod["initContainers"], pod["containers"]
    assert kaniko["image"] == "gcr.io/kaniko-project/executor:v1.23.2"
    destination = "registry.example.com/ml/vllm-fa:0.11.0-1"
    assert {f"--destination={destination}", "--no-push", "--tar-path=/out/image.tar"} <= set(kaniko["args"])
    assert pusher["image"] == builder.settings.pusher_image
    assert pusher["args"] == ["push", "/out/image.tar", destination]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"context": context["metadata"]["name"], "push": "ml-push"}
    # the Dockerfile's RUN steps run in Kaniko's container: the push credentials are mounted only in the pusher's
    assert {m["name"] for m in kaniko["volumeMounts"]} == {"context", "out"}
    assert {m["name"]: m["mountPath"] for m in pusher["volumeMounts"]} == {"out": "/out", "push": "/docker"}
    assert pusher["env"] == [{"name": "DOCKER_CONFIG", "value": "/docker"}]
    assert context["stringData"] == {"Dockerfile": DOCKERFILE}

    home.finish_jobs("succeeded")
    builder.reconcile()
    (built,) = [i for i in images.list_images(db=builder.db) if i.name == "vllm-fa"]
    assert (built.build_status, built.build_message) == ("Ready", "built and pushed")
    assert names_in(home, "secrets", "cove-builds") == []  # the Dockerfile's Secret goes once built
    builder.reconcile()
    (deployment,) = home.api.stored("deployments") if home.api else []
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/ml/vllm-fa:0.11.0-1"
    )
    reasons = [e.reason for e in list_events(db=builder.db, kind=images.KIND, name="vllm-fa:0.11.0-1")]
    assert reasons == ["Ready", "Queued", "Registered"]  # newest first


def test_a_failed_build_says_why_and_a_rebuild_starts_a_new_job(builder: Studio, home: Cluster) -> None:
    assert home.api is not None
    images.add_image(
        actor=ADMIN,
        db=builder.db,
        data=ImageCreate(
            name="broken", version="1", ref="registry.example.com/ml/broken", dockerfile="FROM nothing:1\n"
        ),
    )
    builder.deploy("chat", image="broken")
    builder.reconcile()
    (first,) = names_in(home, "jobs", "cove-builds")
    (
        home.api[f"get /api/v1/namespaces/cove-builds/pods/{first}-x1/log"]
        << "error building image: nothing:1: not found\n"
    )
    home.finish_jobs("failed", exit_code=1)
    builder.reconcile()

    (image,) = [i for i in images.list_images(db=builder.db) if i.name == "broken"]
    assert image.build_status == BuildStatus.FAILED.value
    assert image.build_message.splitlines() == [
        "the build exited with code 1", "error building image: nothing:1: not found",
    ]  # fmt: skip
    (read,) = [c for c in home.api.calls() if c.path.endswith("/log")]
    assert read.query["container"] == "build"  # Kaniko's log: the push never started
    builder.reconcile()
    status, message = builder.status("chat")
    assert status == Status.FAILED.value
    assert message.startswith("its image could not be built: the build exited with code 1")
    with pytest.raises(InvalidSpec, match="has no Dockerfile"):
        images.rebuild_image(actor=ADMIN, db=builder.db, name="vllm", version="v0.33.0")

    images.rebuild_image(actor=ADMIN, db=builder.db, name="broken", version="1")
    builder.reconcile()
    assert len(names_in(home, "jobs", "cove-builds")) == 2  # a new Job: the failed one stays for its logs
    with pytest.raises(Conflict, match="is being built"):
        images.rebuild_image(actor=ADMIN, db=builder.db, name="broken", version="1")


def build_pod(home: Cluster, job: dict[str, object], status: dict[str, object]) -> None:
    """The build Job's pod (made by the Job controller the first time), with ``status`` as the kubelet says."""
    assert home.api is not None
    meta, template = job["metadata"], job["spec"]["template"]  # type: ignore[index]
    name = f"{meta['name']}-x1"  # type: ignore[index]
    if name not in names_in(home, "pods", "cove-builds"):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": name},
               "spec": template["spec"]}  # type: ignore[index]  # fmt: skip
        home.create("/api/v1/namespaces/cove-builds/pods", pod)
    home.patch(f"/api/v1/namespaces/cove-builds/pods/{name}/status", {"status": status})


def image_state(builder: Studio, name: str) -> tuple[str, str]:
    (image,) = [i for i in images.list_images(db=builder.db) if i.name == name]
    return image.build_status, image.build_message


def test_a_build_pushes_after_kaniko_and_a_failed_push_says_so_with_the_pushers_log(
    builder: Studio, home: Cluster
) -> None:
    """Kaniko (the init container) builds, then the pusher pushes: the image says which step it is at, and a push
    refused by the registry fails the build with the pusher's log (not Kaniko's)."""
    assert home.api is not None
    images.add_image(
        actor=ADMIN, db=builder.db,
        data=ImageCreate(name="fa", version="1", ref="registry.example.com/ml/fa", dockerfile=DOCKERFILE),
    )  # fmt: skip
    builder.reconcile()
    (job,) = home.api.stored("jobs", "cove-builds")
    name = job["metadata"]["name"]
    waiting = {"name": "push", "image": "crane", "state": {"waiting": {"reason": "PodInitializing"}}}
    build_pod(home, job, {"phase": "Pending", "containerStatuses": [waiting],
                          "initContainerStatuses": [{"name": "build", "state": {"running": {}}}]})  # fmt: skip
    builder.reconcile()
    assert image_state(builder, "fa") == ("Building", "building")

    built = {"name": "build", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    pushing = {"name": "push", "state": {"running": {}}}
    build_pod(home, job, {"phase": "Running", "initContainerStatuses": [built], "containerStatuses": [pushing]})
    builder.reconcile()
    assert image_state(builder, "fa") == ("Building", "built; pushing to the registry")

    home.api[f"get /api/v1/namespaces/cove-builds/pods/{name}-x1/log"] << "UNAUTHORIZED: authentication required\n"
    refused = {"name": "push", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
    build_pod(home, job, {"phase": "Failed", "initContainerStatuses": [built], "containerStatuses": [refused]})
    home.patch(f"/apis/batch/v1/namespaces/cove-builds/jobs/{name}/status", {"status": {"failed": 1}})
    builder.reconcile()
    status, message = image_state(builder, "fa")
    assert status == BuildStatus.FAILED.value
    assert message.splitlines() == [
        "built, but not pushed: the push to the registry exited with code 1 "
        "(do the push credentials, COVE_REGISTRY_SECRET, allow it?)",
        "UNAUTHORIZED: authentication required",
    ]
    (read,) = [c for c in home.api.calls() if c.path.endswith("/log")]
    assert read.query["container"] == "push"


def test_without_a_registry_a_dockerfile_image_needs_its_reference(builder: Studio) -> None:
    with pytest.raises(InvalidSpec) as raised:
        images.add_image(
            actor=ADMIN, db=builder.db, data=ImageCreate(name="mine", version="1", dockerfile="FROM python:3.11\n")
        )
    assert "COVE_REGISTRY" in raised.value.hint
    with pytest.raises(ValueError, match="ref is required"):
        ImageCreate(name="mine", version="1")


# ------------------------------------------------------------------------------------------------ HPA


def test_with_hpa_the_cluster_scales_and_the_studio_records_it(home: Cluster, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "cove", backend="kubernetes", pools=[GPU], kube_namespace=NS, autoscaler="hpa")
    studio = Studio(settings, home, tmp_path)
    try:
        studio.deploy("chat", autoscale=Autoscale(min_replicas=1, max_replicas=4, target_inflight=2))
        studio.reconcile()
        (hpa,) = home.api.stored("horizontalpodautoscalers") if home.api else []
        assert_valid(hpa)
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
        assert hpa["spec"]["metrics"][0]["external"]["metric"]["selector"] == {"matchLabels": {"deployment": "chat"}}
        assert names_in(home, "poddisruptionbudgets") == ["chat"]  # up to 4 replicas: drains take one at a time

        home.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/chat", {"spec": {"replicas": 3}})  # the HPA acts
        studio.reconcile()
        assert deployments.get_deployment(actor=ADMIN, db=studio.db, name="chat").replicas == 3
        events = list_events(db=studio.db, kind=deployments.KIND, name="chat")
        assert events[0].message == "replicas 1 → 3: by its HorizontalPodAutoscaler"
        assert home.api is not None
        patched = [p for p in home.api.sent("PATCH", "deployments") if "replicas" in p.get("spec", {})]
        assert [p["spec"]["replicas"] for p in patched] == [3]  # only the HPA's own: Cove never fought it

        studio.deploy("batch", replicas=5)  # the pool's other 5 GPUs
        home.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/chat", {"spec": {"replicas": 4}})
        studio.reconcile(passes=3)
        assert deployments.get_deployment(actor=ADMIN, db=studio.db, name="chat").replicas == 3  # admission holds
        refused = [
            e for e in list_events(db=studio.db, kind=deployments.KIND, name="chat") if e.reason == "ScaleRefused"
        ]
        assert len(refused) == 1  # said once, not on every pass
        assert refused[0].message.startswith(
            "its HorizontalPodAutoscaler chose 4 replicas, which the pool cannot admit"
        )

        deployments.set_autoscale(actor=ADMIN, db=studio.db, name="chat", autoscale=None)
        studio.reconcile()
        assert names_in(home, "horizontalpodautoscalers") == []
    finally:
        studio.controller.stop(stop_workloads=False)
        studio.db.dispose()


def test_with_hpa_the_controller_owns_the_step_between_zero_and_one(home: Cluster, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "cove", backend="kubernetes", pools=[GPU], kube_namespace=NS, autoscaler="hpa")
    studio = Studio(settings, home, tmp_path)
    assert home.api is not None

    def cluster_replicas() -> int:
        (live,) = home.api.stored("deployments") if home.api else []
        return int(live["spec"]["replicas"])

    def replicas() -> int:
        return deployments.get_deployment(actor=ADMIN, db=studio.db, name="nap").replicas

    try:
        studio.deploy("nap", autoscale=Autoscale(min_replicas=0, max_replicas=4, target_inflight=2, idle_s=60))
        studio.reconcile()
        (hpa,) = home.api.stored("horizontalpodautoscalers")
        assert hpa["spec"]["minReplicas"] == 1  # an HPA cannot go to 0 (without a feature gate): Cove does that step
        assert (replicas(), cluster_replicas()) == (0, 0)  # created asleep

        deployments.request_wake(db=studio.db, name="nap", at=utcnow())  # what the gateway does for a held request
        studio.reconcile(passes=2)
        assert (replicas(), cluster_replicas()) == (1, 1)
        home.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/nap", {"spec": {"replicas": 3}})  # the HPA acts
        studio.reconcile()
        assert replicas() == 3  # from 1 up, the HPA's count is recorded as before

        studio.controller.wall = lambda: utcnow() + timedelta(seconds=61)  # a minute without a request
        studio.reconcile(passes=3)
        assert (replicas(), cluster_replicas()) == (0, 0)  # asleep, and the HPA's 3 is not recorded over it
        reasons = [
            e.message for e in list_events(db=studio.db, kind=deployments.KIND, name="nap") if e.reason == "Scaled"
        ]
        assert reasons == [
            "replicas 3 → 0: no request for 60 s: sleeping",
            "replicas 1 → 3: by its HorizontalPodAutoscaler",
            "replicas 0 → 1: a request woke it",
        ]
    finally:
        studio.controller.stop(stop_workloads=False)
        studio.db.dispose()


def test_the_studio_database_records_which_cluster(database_url: str) -> None:
    """Clusters and pools' clusters survive in both databases (SQLite here, PostgreSQL in CI)."""
    from studio.db import open_database

    db: Database = open_database(database_url)
    try:
        clusters.add_cluster(
            actor=ADMIN, db=db, key="k", data=ClusterCreate(name="lab", kubeconfig=kubeconfig("https://k8s.lab:6443"))
        )
        pools.sync_configured_pools(db=db, specs=[PoolSpec(name="lab-gpu", cluster="lab")])  # type: ignore[call-arg]
        (pool,) = [u.pool for u in pools.list_pools(db=db)]
        assert pool.cluster == "lab"
        assert [c.name for c in clusters.list_clusters(db=db)] == ["lab"]
    finally:
        db.dispose()


def test_a_steady_pass_reads_the_namespace_once_whatever_the_number_of_deployments(
    studio: Studio, home: Cluster
) -> None:
    for i in range(4):
        studio.deploy(f"chat-{i}")
    studio.reconcile()
    home.settle("run")
    studio.reconcile()
    kube = studio.controller.backend.kube  # type: ignore[attr-defined]
    calls: list[str] = []
    for verb in ("get", "find", "pods", "deployments", "create", "patch", "apply", "delete"):
        real = getattr(kube, verb)
        setattr(kube, verb, lambda *a, _real=real, _verb=verb, **kw: calls.append(_verb) or _real(*a, **kw))
    studio.reconcile()
    assert sorted(calls) == ["find", "find", "pods"]  # Deployments, disruption budgets, pods: 3 reads, no writes
    assert {deployments.get_deployment(actor=ADMIN, db=studio.db, name=f"chat-{i}").status for i in range(4)} == {
        "Ready"
    }


def test_a_kubeconfig_is_sealed_in_the_database_and_a_wrong_key_is_said(studio: Studio, east: Cluster) -> None:
    clusters.add_cluster(
        actor=ADMIN, db=studio.db, key=studio.key, data=ClusterCreate(name="east", kubeconfig=kubeconfig(east.url))
    )
    with studio.db.session() as session:
        (stored,) = session.exec(select(ClusterRow.kubeconfig)).all()
    assert "secret-token" not in stored
    assert east.url not in stored  # the whole file is sealed, not only its credentials
    add_node(east, "h100-1", "h100", 8)
    studio.reconcile()
    studio.deploy("chat-east", pool="h100")

    studio.controller.key = "another studio's key"  # a restored database without its key
    studio.reconcile()
    status, message = studio.status("chat-east")
    assert status == Status.PENDING.value
    assert message.startswith("cluster east: the kubeconfig of cluster 'east' cannot be read with this studio's key")
    assert message.endswith("(restore the key it was sealed with, or register it again)")
    assert names_in(east, "deployments") == []
