"""Notebook pods on Kubernetes: KubePoolSpawner, configured by hub/jupyterhub_config.py itself, runs its full
``start()``/``stop()`` against a Kubernetes API (kmock's emulator, tests/fakes/kubeapi.py) while the test plays the
kubelet. The pods and volume claims it sends are asserted field by field and validated against the API's schemas;
admission goes through the studio's pools as on the local path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner
from tornado import web
from traitlets.config import Config, PyFileConfigLoader

from hub.spawner import KubePoolSpawner
from studio.bootstrap import open_studio
from studio.models import Pool
from studio.services import notebooks
from studio.settings import Settings
from studio.values import Purpose, Sharing
from tests.conftest import make_settings
from tests.fakes.kubeapi import KubeAPI, Kubelet
from tests.integration.conftest import cove_env
from tests.people import ADMIN, member
from tests.schemas import assert_valid, restricted_problems

HUB = Path(__file__).resolve().parents[2] / "hub"
GPU_NODES = {"cove.dev/pool": "a100"}
GPU_TAINT = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Kubernetes mode, a dummy kubeconfig (KubeSpawner loads one before it is told the API's address), and two
    pools: whole A100s for the "ml" group, and an L20 shared in HAMi slices, open to all."""
    s = make_settings(
        tmp_path / "home",
        hub_spawner="kubernetes",
        kube_namespace="notebooks",
        notebook_image="registry.example.com/cove/notebook:0.1.0",
        notebook_storage_class="fast",
        notebook_home_size="20Gi",
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters: [{name: t, cluster: {server: 'http://127.0.0.1:9'}}]"
        "\ncontexts: [{name: t, context: {cluster: t, user: t}}]\nusers: [{name: t, user: {token: t}}]\n"
    )
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))  # read from the env at import
    for key, value in cove_env(s).items():
        if key.startswith("COVE_"):
            monkeypatch.setenv(key, value)
    for key, value in {
        "COVE_HUB_SPAWNER": "kubernetes",
        "COVE_KUBE_NAMESPACE": s.kube_namespace,
        "COVE_NOTEBOOK_IMAGE": s.notebook_image,
        "COVE_NOTEBOOK_STORAGE_CLASS": s.notebook_storage_class,
        "COVE_NOTEBOOK_HOME_SIZE": s.notebook_home_size,
    }.items():
        monkeypatch.setenv(key, value)
    db = open_studio(s)
    with db.session() as session:
        session.add(
            Pool(name="a100", purpose=Purpose.DEV.value, sharing=Sharing.WHOLE.value, gpu_model="A100", gpu_count=2,
                 gpu_memory_mib=81920, cpu_cores=32, memory_mib=262144, groups=["ml"], node_selector=GPU_NODES,
                 tolerations=GPU_TAINT)
        )  # fmt: skip
        session.add(
            Pool(name="l20", purpose=Purpose.DEV.value, sharing=Sharing.HAMI.value, gpu_model="L20", gpu_count=1,
                 gpu_memory_mib=49152, cpu_cores=8, memory_mib=65536, node_selector={"cove.dev/pool": "l20"})
        )  # fmt: skip
        session.commit()
    for name, *groups in (("ada", "ml"), ("bo",), ("cy", "ml"), ("eve",)):
        member(db, name, *groups)
    db.dispose()
    return s


def hub_config() -> Config:
    """hub/jupyterhub_config.py as JupyterHub loads it, from the environment the settings fixture set."""
    return PyFileConfigLoader("jupyterhub_config.py", path=str(HUB)).load_config()


def spawner(api: KubeAPI, user: str, profile: str) -> KubePoolSpawner:
    """A spawner for ``user`` (a Cove user: their groups are read from Cove, not from the hub)."""
    person = SimpleNamespace(name=user, id=1, url=f"/user/{user}/", escaped_name=user, groups=[])
    s = KubePoolSpawner(
        config=hub_config(), _mock=True, user=person, k8s_api_host=str(api.url).rstrip("/"), start_timeout=10
    )
    s.user_options = {"profile": profile}
    s.api_token = "token-of-" + user
    return s


def run(scenario: Callable[[KubeAPI, Kubelet], Awaitable[None]], *, no_room: str = "") -> None:
    """The scenario against a fresh API with a kubelet that starts every pod (or, given ``no_room``, leaves every
    pod Pending with that reason). KubeSpawner's shared watchers are stopped afterwards (they belong to this loop)."""

    async def main() -> None:
        async with KubeAPI.serve() as api:
            kubelet = Kubelet(api)

            async def handle(pod: dict[str, Any]) -> None:
                await (kubelet.unschedulable(pod, no_room) if no_room else kubelet.run(pod))

            pods = asyncio.create_task(kubelet.each_new_pod(handle))
            try:
                await scenario(api, kubelet)
            finally:
                pods.cancel()
                await KubeSpawner._stop_all_reflectors()

    asyncio.run(main())


def sent(api: KubeAPI, plural: str) -> list[dict[str, Any]]:
    return api.sent("POST", plural)


def claims(settings: Settings) -> dict[str, str]:
    db = open_studio(settings)
    try:
        return {n.name: n.profile for n in notebooks.list_notebooks(actor=ADMIN, db=db)}
    finally:
        db.dispose()


def container(pod: Mapping[str, Any]) -> dict[str, Any]:
    (notebook,) = pod["spec"]["containers"]
    return dict(notebook)


def test_a_whole_gpu_server_is_a_pod_on_its_pool_with_home_and_read_only_data(settings: Settings) -> None:
    async def scenario(api: KubeAPI, kubelet: Kubelet) -> None:
        s = spawner(api, "ada", "a100-gpu-1")
        url = await s.start()
        assert url.startswith("http://10.42.0.")
        assert url.endswith(":8888")
        assert claims(settings) == {"ada": "a100-gpu-1"}

        (pod,) = sent(api, "pods")
        (pvc,) = sent(api, "persistentvolumeclaims")
        assert_valid(pod, pvc)
        assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in api.stored("pods")] == [
            ("notebooks", "jupyter-ada")
        ]
        spec, box = pod["spec"], container(pod)
        assert box["image"] == "registry.example.com/cove/notebook:0.1.0"
        assert box["resources"]["limits"] == {"cpu": 4.0, "memory": 16 * 1024**3, "nvidia.com/gpu": "1"}
        assert box["resources"]["requests"] == {"cpu": 4.0, "memory": 16 * 1024**3}
        assert spec["nodeSelector"] == GPU_NODES
        assert GPU_TAINT[0] in spec["tolerations"]
        # home: a claim of its own, kept across restarts; data: the shared caches, read-only
        assert pvc["metadata"]["name"] == "home-ada"
        assert pvc["spec"]["resources"]["requests"] == {"storage": "20Gi"}
        assert pvc["spec"]["storageClassName"] == "fast"
        volumes = {v["name"]: v["persistentVolumeClaim"] for v in spec["volumes"]}
        assert volumes == {
            "home": {"claimName": "home-ada"},
            "models": {"claimName": "cove-models", "readOnly": True},
            "datasets": {"claimName": "cove-datasets", "readOnly": True},
        }
        mounts = {m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in box["volumeMounts"]}
        assert mounts == {
            "home": ("/home/jovyan", False),
            "models": ("/data/models", True),
            "datasets": ("/data/datasets", True),
        }
        env = {e["name"]: e.get("value") for e in box["env"]}
        assert env["COVE_POOL"] == "a100"
        assert env["COVE_PROFILE"] == "a100-gpu-1"
        assert env["COVE_MODELS_DIR"] == env["HF_HUB_CACHE"] == "/data/models"
        assert env["COVE_DATASETS_DIR"] == "/data/datasets"
        assert env["COVE_API_URL"] == env["COVE_GATEWAY_URL"] == settings.gateway_url  # cove.Client() finds it
        # non-root, as Pod Security "restricted" asks
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 1000
        assert box["securityContext"]["allowPrivilegeEscalation"] is False
        assert box["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert box["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert restricted_problems(spec) == []
        assert "--allow-root" not in box["args"]
        assert spec["automountServiceAccountToken"] is False

        await s.stop()
        assert api.stored("pods") == []
        assert [p["metadata"]["name"] for p in api.stored("persistentvolumeclaims")] == ["home-ada"]
        assert claims(settings) == {}

    run(scenario)


def test_a_hami_slice_asks_for_gpu_memory_of_one_device(settings: Settings) -> None:
    async def scenario(api: KubeAPI, kubelet: Kubelet) -> None:
        s = spawner(api, "bo", "l20-slice-8g")
        await s.start()
        (pod,) = sent(api, "pods")
        assert_valid(pod)
        limits = container(pod)["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert limits["nvidia.com/gpumem"] == "8192"
        assert pod["spec"]["nodeSelector"] == {"cove.dev/pool": "l20"}
        await s.stop()

    run(scenario)


def test_a_full_pool_refuses_before_anything_is_created(settings: Settings) -> None:
    async def scenario(api: KubeAPI, kubelet: Kubelet) -> None:
        first = spawner(api, "ada", "a100-gpu-2")
        await first.start()
        second = spawner(api, "cy", "a100-gpu-1")
        with pytest.raises(web.HTTPError) as refused:
            await second.start()
        assert refused.value.status_code == 409
        assert "free" in str(refused.value.log_message)
        assert "retry" in str(refused.value.log_message)
        assert [p["metadata"]["name"] for p in api.stored("pods")] == ["jupyter-ada"]
        assert claims(settings) == {"ada": "a100-gpu-2"}
        await first.stop()

    run(scenario)


def test_a_pod_that_never_schedules_gives_its_claim_back(settings: Settings) -> None:
    async def scenario(api: KubeAPI, kubelet: Kubelet) -> None:
        s = spawner(api, "ada", "a100-gpu-1")
        s.start_timeout = 1
        with pytest.raises(web.HTTPError) as failed:
            await s.start()
        assert failed.value.status_code == 503
        assert "no node can take it: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in str(
            failed.value.log_message
        )
        assert claims(settings) == {}
        assert api.stored("pods") == []  # a pod left Pending would take the GPU once one frees up

    run(scenario, no_room="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")


def test_profiles_follow_the_users_groups(settings: Settings) -> None:
    async def scenario(api: KubeAPI, kubelet: Kubelet) -> None:
        outsider = spawner(api, "eve", "a100-gpu-1")
        offered = {p.pool for p in outsider.profiles()}
        assert "l20" in offered
        assert "a100" not in offered
        with pytest.raises(web.HTTPError) as refused:
            await outsider.start()
        assert refused.value.status_code == 400
        assert api.stored("pods") == []

    run(scenario)


def test_each_pod_mounts_its_own_home_and_nothing_else_of_anyone(settings: Settings) -> None:
    """Two people's servers: each pod has its own home claim, the shared data read-only, and no other volume (no
    host path, no service account token, nothing of the other's)."""

    async def scenario(api: KubeAPI, kubelet: Kubelet) -> None:
        servers = {user: spawner(api, user, "l20-slice-4g") for user in ("ada", "bo")}
        for s in servers.values():
            await s.start()
        pods = {p["metadata"]["name"]: p for p in sent(api, "pods")}
        assert sorted(pods) == ["jupyter-ada", "jupyter-bo"]
        assert sorted(c["metadata"]["name"] for c in sent(api, "persistentvolumeclaims")) == ["home-ada", "home-bo"]
        for user, other in (("ada", "bo"), ("bo", "ada")):
            pod = pods[f"jupyter-{user}"]
            assert_valid(pod)
            assert pod["spec"]["volumes"] == [
                {"name": "home", "persistentVolumeClaim": {"claimName": f"home-{user}"}},
                {"name": "models", "persistentVolumeClaim": {"claimName": "cove-models", "readOnly": True}},
                {"name": "datasets", "persistentVolumeClaim": {"claimName": "cove-datasets", "readOnly": True}},
            ]
            mounts = sorted(
                (m["name"], m["mountPath"], m.get("readOnly", False)) for m in container(pod)["volumeMounts"]
            )
            assert mounts == [
                ("datasets", "/data/datasets", True),
                ("home", "/home/jovyan", False),
                ("models", "/data/models", True),
            ]
            assert other not in str(pod["spec"]["volumes"])
            assert pod["spec"]["automountServiceAccountToken"] is False
        for s in servers.values():
            await s.stop()

    run(scenario)


def test_only_coves_users_start_servers(settings: Settings) -> None:
    async def scenario(api: KubeAPI, kubelet: Kubelet) -> None:
        with pytest.raises(web.HTTPError) as refused:
            await spawner(api, "mallory", "l20-slice-4g").start()
        assert refused.value.status_code == 403
        assert "only Cove's users start notebook servers: no user named 'mallory'" in str(refused.value.log_message)
        assert api.stored("pods") == []
        assert claims(settings) == {}

    run(scenario)
