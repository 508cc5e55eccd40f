"""The Helm chart (helm/cove), rendered by the real helm binary (scripts/install-helm) over the values files in
tests/fixtures/helm: every object validated against the Kubernetes API's schemas, every pod under the Pod Security
Standard *restricted*, and what a chart user would notice checked by name: which settings each process gets, which
database it reaches, what the controller and the hub may do, what user workloads may not reach, which values are
refused and with what message. No cluster is needed: `helm template` and `helm lint` run offline."""

from __future__ import annotations

import base64
import glob
import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubespawner import KubeSpawner
from pydantic.alias_generators import to_camel
from sqlalchemy.engine import make_url

from studio.backends.base import WorkloadSpec
from studio.backends.kubernetes import manifests
from studio.models import PoolSpec
from studio.runtimes import CONTAINER_PORT, container_launch
from studio.settings import Settings
from studio.values import Resources, RuntimeKind
from tests.kube_calls import Permission, server_calls
from tests.schemas import assert_valid, pod_spec_of, restricted_problems

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "cove"
FIXTURES = ROOT / "tests" / "fixtures" / "helm"
VALUES_FILES = sorted(p.name for p in FIXTURES.glob("*.yaml"))
SECRETS = FIXTURES / "base" / "secrets.yaml"  # the Secrets every install names, given before each values file
RELEASE, NAMESPACE = "studio", "ml"  # a release name without "cove": objects are named studio-cove-*
PREFIX = f"{RELEASE}-cove"
WORKLOADS = {"Deployment", "StatefulSet"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "Namespace"}
CONTROL_PLANE = ("server", "ui", "playground", "hub")  # the components that use the studio database

Doc = dict[str, Any]


# ------------------------------------------------------------------------------------------------ helm


def documents(text: str) -> list[Doc]:
    """The objects of a multi-document YAML stream, read by libyaml (PyYAML's own parser takes seconds per chart)."""
    return [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d]


class Helm:
    """helm lint/template with a private cache/config/data home, and parsed output."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = os.environ | {
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(home / "no-cluster"),  # nothing here may reach a real cluster
        }
        self._rendered: dict[tuple[Any, ...], list[Doc]] = {}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env, timeout=60, check=False
        )

    def template(
        self, *files: str | Path, values: Mapping[str, Any] | None = None, secrets: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``helm template`` over SECRETS (unless ``secrets`` is false) and ``files``."""
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE] + (["--values", str(SECRETS)] * secrets)
        for f in files:
            args += ["--values", str(FIXTURES / f if isinstance(f, str) else f)]
        for key, value in (values or {}).items():
            args += ["--set-json", f"{key}={json.dumps(value)}"]
        return self.run(*args)

    def notes(self, *files: str, **values: Any) -> str:
        """What `helm install` prints after installing (a client-side dry run: no cluster is contacted); values as
        for ``render``."""
        args = ["install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", "--values", str(SECRETS)]
        for f in files:
            args += ["--values", str(FIXTURES / f)]
        for key, value in values.items():
            args += ["--set-json", f"{key.replace('__', '.')}={json.dumps(value)}"]
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout.partition("\nNOTES:\n")[2]

    def render(self, *files: str, **values: Any) -> list[Doc]:
        """The objects the chart makes for these values files (and dotted --set-json overrides, as keywords with
        '__' for '.'), parsed."""
        key = (files, json.dumps(values, sort_keys=True))
        if key not in self._rendered:
            done = self.template(*files, values={k.replace("__", "."): v for k, v in values.items()})
            assert done.returncode == 0, done.stderr
            self._rendered[key] = documents(done.stdout)
        return self._rendered[key]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The pinned helm, installed by scripts/install-helm (a no-op once it is there)."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-helm")], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        why = f"scripts/install-helm could not obtain helm:\n{done.stdout}{done.stderr}"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must render the chart; a skip there would hide a broken chart
        pytest.skip(why)
    return Helm(ROOT / ".venv" / "bin" / "helm", tmp_path_factory.mktemp("helm-home"))


def find(docs: Sequence[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def names(docs: Sequence[Doc], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in docs if d["kind"] == kind}


def container(docs: Sequence[Doc], component: str) -> Doc:
    """The one container of a Cove component's Deployment."""
    (box,) = find(docs, "Deployment", f"{PREFIX}-{component}")["spec"]["template"]["spec"]["containers"]
    return box


def env_of(docs: Sequence[Doc], component: str) -> dict[str, Any]:
    """A component's environment: its ConfigMap's values, then its `env` (plain values, or the valueFrom)."""
    box = container(docs, component)
    env: dict[str, Any] = {}
    for source in box.get("envFrom", []):
        env |= find(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    for var in box.get("env", []):
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def values_of(values_file: str) -> dict[str, Any]:
    """A values file as written (without the chart's defaults)."""
    return yaml.safe_load((FIXTURES / values_file).read_text()) or {}


def secret_value(docs: Sequence[Doc], name: str, key: str) -> str:
    return base64.b64decode(find(docs, "Secret", name)["data"][key]).decode()


def pod_templates(docs: Sequence[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------------------------------ every values file


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_lint_strict_passes(helm: Helm, values_file: str) -> None:
    done = helm.run(
        "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
        "--values", str(SECRETS), "--values", str(FIXTURES / values_file),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout, done.stdout
    assert "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_objects_are_valid_and_pods_restricted(helm: Helm, values_file: str) -> None:
    docs = helm.render(values_file)
    assert_valid(*docs)
    assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    build_namespace = values_of(values_file).get("builds", {}).get("namespace", "cove-builds")
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in d["metadata"], where
        elif d["metadata"]["labels"]["app.kubernetes.io/component"] == "builds":  # its RBAC, beside the builds
            assert d["metadata"].get("namespace") == build_namespace, where
        else:
            assert d["metadata"].get("namespace") == NAMESPACE, where
    pods = {f"{d['kind']}/{d['metadata']['name']}": spec for d in docs if (spec := pod_spec_of(d)) is not None}
    assert len(pods) >= 4
    for where, spec in pods.items():
        assert restricted_problems(spec) == [], where
        for box in spec["containers"]:
            assert box["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert {"cpu", "memory"} <= set(box["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(box["resources"]["limits"]), where
            assert box.get("readinessProbe"), where
            assert box.get("livenessProbe"), where


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_selectors_match_their_pods(helm: Helm, values_file: str) -> None:
    docs = helm.render(values_file)
    templates = dict(pod_templates(docs))
    for d in docs:
        if d["kind"] in WORKLOADS:
            selector = d["spec"]["selector"]["matchLabels"]
            assert selects(selector, d["spec"]["template"]["metadata"]["labels"]), d["metadata"]["name"]
            others = [w for w, t in templates.items() if selects(selector, t["metadata"]["labels"])]
            assert others == [f"{d['kind']}/{d['metadata']['name']}"], "selectors must not overlap"
    for service in (d for d in docs if d["kind"] == "Service"):
        matched = [w for w, t in templates.items() if selects(service["spec"]["selector"], t["metadata"]["labels"])]
        assert len(matched) == 1, f"Service/{service['metadata']['name']} selects {matched}"
        (template,) = (templates[w] for w in matched)
        ports = {p["name"] for box in template["spec"]["containers"] for p in box.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for d in docs:
        labels = d["metadata"]["labels"]
        assert {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"} <= set(labels)
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "cove-0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_images_are_pinned(helm: Helm, values_file: str) -> None:
    docs = helm.render(values_file)
    images = [box["image"] for _, t in pod_templates(docs) for box in t["spec"]["containers"]]
    images.append(env_of(docs, "hub")["COVE_NOTEBOOK_IMAGE"])  # the image of every notebook pod
    for builds in ("COVE_BUILDER_IMAGE", "COVE_PUSHER_IMAGE"):  # the images of every build Job
        if image := env_of(docs, "server").get(builds):
            images.append(image)
    images.append(env_of(docs, "server")["COVE_TRAINER_IMAGE"])  # the image of every fine-tune Job
    for image in images:
        named, _, digest = image.partition("@")
        assert not digest or (digest.startswith("sha256:") and len(digest) == 71), image
        repository, _, tag = named.rpartition(":")
        assert repository, f"{image} has no tag"
        assert "/" not in tag, f"{image} has no tag"
        assert tag.lower() != "latest", image


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_pod_templates_carry_checksums(helm: Helm, values_file: str) -> None:
    for where, template in pod_templates(helm.render(values_file)):
        annotations = template["metadata"]["annotations"]
        for key in ("checksum/config", "checksum/secret"):
            assert len(annotations.get(key, "")) == 64, f"{where}: {key}"


# ------------------------------------------------------------------------------------------------ behaviour


def checksums(docs: Sequence[Doc]) -> dict[str, str]:
    return {w: t["metadata"]["annotations"]["checksum/config"] for w, t in pod_templates(docs)}


def test_a_config_change_rolls_the_pods_that_read_it(helm: Helm) -> None:
    before = checksums(helm.render("defaults.yaml"))
    assert before == checksums(helm.render("defaults.yaml", hub__apiToken="x" * 32)), "deterministic"
    pools = checksums(helm.render("gpu-pool.yaml"))
    assert pools[f"Deployment/{PREFIX}-server"] != before[f"Deployment/{PREFIX}-server"]
    assert pools[f"Deployment/{PREFIX}-playground"] == before[f"Deployment/{PREFIX}-playground"]
    culling = checksums(helm.render("defaults.yaml", hub__idleTimeoutSeconds=600))
    assert culling[f"Deployment/{PREFIX}-hub"] != before[f"Deployment/{PREFIX}-hub"]
    assert culling[f"Deployment/{PREFIX}-server"] == before[f"Deployment/{PREFIX}-server"]


@pytest.mark.parametrize("values_file", ["defaults.yaml", "gpu-pool.yaml", "hami-pool.yaml"])
def test_pools_reach_the_server_as_json(helm: Helm, values_file: str) -> None:
    pools = values_of(values_file).get("pools", [])
    sent = json.loads(env_of(helm.render(values_file), "server")["COVE_POOLS"])
    assert sent == pools
    assert [PoolSpec.model_validate(p).name for p in sent] == [p["name"] for p in pools], "the server accepts them"


def test_schema_pools_have_the_servers_keys() -> None:
    """The chart's pool keys are PoolSpec's (camelCase): a key one side gains is a key the other must learn."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    keys = set(schema["properties"]["pools"]["items"]["properties"])
    assert keys == {to_camel(name) for name in PoolSpec.model_fields}


def test_each_process_gets_its_settings(helm: Helm) -> None:
    docs = helm.render("defaults.yaml")
    server, ui, playground, hub = (env_of(docs, c) for c in ("server", "ui", "playground", "hub"))
    server_url = f"http://{PREFIX}-server:8080"
    assert server["COVE_POOLS"] == "[]"
    assert {k: server[k] for k in ("COVE_HOST", "COVE_PORT", "COVE_BACKEND", "COVE_KUBE_NAMESPACE", "COVE_DEMO")} == {
        "COVE_HOST": "0.0.0.0",
        "COVE_PORT": "8080",
        "COVE_BACKEND": "kubernetes",
        "COVE_KUBE_NAMESPACE": NAMESPACE,
        "COVE_DEMO": "false",
    }
    for env in (server, ui):
        assert env["COVE_HOME"] == "/var/lib/cove"
        assert (env["COVE_MODELS_PVC"], env["COVE_DATASETS_PVC"]) == (f"{PREFIX}-models", f"{PREFIX}-datasets")
        assert env["COVE_PUBLIC_URL"] == server_url
    assert ui["COVE_HUB_PUBLIC_URL"] == server["COVE_HUB_PUBLIC_URL"] == f"http://{PREFIX}-hub:8000"
    assert (
        ui["COVE_HUB_API_TOKEN"]
        == hub["COVE_HUB_API_TOKEN"]
        == {"secretKeyRef": {"name": "cove-hub", "key": "api-token"}}
    )
    assert playground["COVE_PUBLIC_URL"] == server_url
    assert "COVE_PLAYGROUND_API_KEY" not in playground, "no shared key: each person chats with their own"
    assert (
        playground["COVE_SECRET_KEY"]
        == ui["COVE_SECRET_KEY"]
        == {"secretKeyRef": {"name": "cove-studio", "key": "secret-key"}}
    ), "the playground checks the session cookie the server signs"
    assert {k: hub[k] for k in hub if k.startswith("COVE_HUB_") and k != "COVE_HUB_API_TOKEN"} == {
        "COVE_HUB_PORT": "8000",
        "COVE_HUB_API_PORT": "8081",
        "COVE_HUB_SPAWNER": "kubernetes",
        "COVE_HUB_CONNECT_HOST": f"{PREFIX}-hub",
        "COVE_HUB_IDLE_TIMEOUT_S": "3600",
        "COVE_HUB_MAX_AGE_S": "0",
    }
    assert hub["COVE_NOTEBOOK_IMAGE"] == "cove/notebook:0.1.0"
    assert hub["COVE_NOTEBOOK_HOME_SIZE"] == "10Gi"
    assert hub["COVE_PUBLIC_URL"] == server_url, "notebooks reach the gateway inside the cluster"
    assert not names(docs, "Secret"), "the operator's Secrets, named in the values; the chart makes none"
    studio_key = {"secretKeyRef": {"name": "cove-studio", "key": "secret-key"}}
    # one key seals and unseals, and signs the session cookie the hub checks
    assert server["COVE_SECRET_KEY"] == ui["COVE_SECRET_KEY"] == hub["COVE_SECRET_KEY"] == studio_key
    for component, port in (("server", 8080), ("ui", 8501), ("playground", 7860), ("hub", 8000)):
        box = container(docs, component)
        assert box["args"] == [component]
        assert box["image"] == "cove/cove:0.1.0"
        assert box["ports"][0]["containerPort"] == port
    hub_deployment = find(docs, "Deployment", f"{PREFIX}-hub")
    assert hub_deployment["spec"]["strategy"]["type"] == "Recreate"
    assert container(docs, "hub")["readinessProbe"]["httpGet"]["path"] == "/hub/health"
    assert container(docs, "ui")["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"
    assert container(docs, "playground")["readinessProbe"]["httpGet"]["path"] == "/healthz"  # open without a login
    server = container(docs, "server")  # a database outage makes the gateway degraded, never restarted
    assert (server["livenessProbe"]["httpGet"]["path"], server["readinessProbe"]["httpGet"]["path"]) == (
        "/livez",
        "/readyz",
    )
    # it answers /livez before it reaches the database: a slow database start never gets it killed
    assert server["startupProbe"]["httpGet"]["path"] == "/livez"
    assert {p["name"]: p["port"] for p in find(docs, "Service", f"{PREFIX}-hub")["spec"]["ports"]} == {
        "http": 8000,
        "api": 8081,
    }


def test_hub_values_become_its_settings(helm: Helm) -> None:
    docs = helm.render("gpu-pool.yaml")
    hub = env_of(docs, "hub")
    assert hub["COVE_HUB_IDLE_TIMEOUT_S"] == "600"
    assert not {"COVE_HUB_GROUPS", "COVE_HUB_ADMIN_USERS"} & set(hub), "groups and admins are Cove's own"
    docs = helm.render("ingress.yaml")
    hub = env_of(docs, "hub")
    extra = find(docs, "ConfigMap", f"{PREFIX}-hub-extra-config")["data"]["extra_config.py"]
    assert 'c.JupyterHub.authenticator_class = "github"' in extra
    mount = {m["name"]: m for m in container(docs, "hub")["volumeMounts"]}["extra-config"]
    assert hub["COVE_HUB_EXTRA_CONFIG"] == f"{mount['mountPath']}/extra_config.py"
    assert "COVE_HUB_EXTRA_CONFIG" not in env_of(helm.render("defaults.yaml"), "hub")


def test_every_variable_the_chart_sets_is_a_cove_setting(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt COVE_* variable would be ignored silently (Settings ignores unknown ones): this catches it, and
    has Cove parse each process's environment as it will in the pod."""
    known = {f"COVE_{name.upper()}" for name in Settings.model_fields}
    for name in [k for k in os.environ if k.startswith("COVE_")]:
        monkeypatch.delenv(name)
    for values_file in ("gpu-pool.yaml", "ingress.yaml", "hpa-on.yaml", "builds.yaml"):
        docs, parsed = helm.render(values_file), {}
        for component in ("server", "ui", "playground", "hub"):
            env = {k: v for k, v in env_of(docs, component).items() if isinstance(v, str)}  # not the Secrets
            assert set(env) - known == set(), component
            with monkeypatch.context() as patch:
                for key, value in env.items():
                    patch.setenv(key, value)
                parsed[component] = Settings()
            assert str(parsed[component].home) == "/var/lib/cove", component
            assert parsed[component].host == "0.0.0.0", component
        assert parsed["server"].backend == "kubernetes"
        assert parsed["server"].pools == values_of(values_file).get("pools", [])
        assert parsed["server"].autoscaler == ("hpa" if values_file == "hpa-on.yaml" else "controller")
        assert bool(parsed["server"].registry) == (values_file == "builds.yaml")
        assert parsed["hub"].hub_spawner == "kubernetes"
        assert parsed["hub"].hub_connect_host == f"{PREFIX}-hub"
        assert parsed["server"].gateway_url == parsed["ui"].gateway_url


def test_bundled_database_is_wired_to_every_control_plane_process(helm: Helm) -> None:
    """Every control-plane process connects as the role that owns Cove's database, with the password from the
    operator's Secret and postgresql.sslMode; only the database pod gets the superuser's password."""
    docs = helm.render("defaults.yaml")
    host = f"{PREFIX}-postgresql.{NAMESPACE}.svc"
    for component in CONTROL_PLANE:
        env = env_of(docs, component)
        assert env["COVE_DATABASE_URL"] == f"postgresql+psycopg://cove@{host}:5432/cove", component
        assert env["COVE_DATABASE_PASSWORD"] == {"secretKeyRef": {"name": "cove-database", "key": "password"}}
        assert env["COVE_DATABASE_SSLMODE"] == "prefer"
        assert "postgres-password" not in json.dumps(env), component
    postgres = find(docs, "StatefulSet", f"{PREFIX}-postgresql")
    pod = postgres["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in box["env"]}
    assert env["POSTGRES_USER"] == "postgres"
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "cove-database", "key": "postgres-password"}}
    assert (env["APP_ROLE"], env["APP_DATABASE"]) == ("cove", "cove")
    assert env["APP_PASSWORD"] == {"secretKeyRef": {"name": "cove-database", "key": "password"}}
    init = find(docs, "ConfigMap", f"{PREFIX}-postgresql-init")
    assert {"name": "init", "configMap": {"name": init["metadata"]["name"]}} in pod["volumes"]
    assert {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True} in box["volumeMounts"]
    assert box["image"] == "docker.io/library/postgres:17.6-bookworm"
    assert box["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert pod["securityContext"]["runAsUser"] == 999
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert find(docs, "Service", f"{PREFIX}-postgresql")["spec"]["ports"][0]["port"] == 5432


@pytest.mark.postgres
def test_the_init_script_makes_a_role_that_owns_the_database_and_nothing_more(helm: Helm, postgres: str) -> None:
    """The bundled database's init script, from the rendered ConfigMap, run against a real PostgreSQL as the image
    runs it (as the superuser): Cove's role is no superuser and may not create roles or databases, yet owns its
    database, so Cove's migrations run as it; and a password with quotes survives psql's quoting."""
    import psycopg

    from studio.db import open_database

    docs = helm.render("defaults.yaml", postgresql__auth__username="cove_app", postgresql__auth__database="cove_init")
    script = find(docs, "ConfigMap", f"{PREFIX}-postgresql-init")["data"]["10-cove-role.sh"]
    server = make_url(postgres)
    env = os.environ | {
        "PATH": f"{glob.glob('/usr/lib/postgresql/*/bin')[-1]}:{os.environ['PATH']}",
        "PGHOST": str(server.host), "PGPORT": str(server.port),
        "POSTGRES_USER": "postgres", "APP_ROLE": "cove_app", "APP_DATABASE": "cove_init",
        "APP_PASSWORD": "it's \"odd\"",
    }  # fmt: skip
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    superuser = postgres.replace("+psycopg", "") + "/postgres"
    with psycopg.connect(superuser) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolcanlogin, rolpassword IS NOT NULL"
            " FROM pg_authid WHERE rolname = 'cove_app'"
        ).fetchone()
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'cove_init'").fetchone()
    assert role == (False, False, False, False, True, True)
    assert owner == ("cove_app",)
    db = open_database(server.set(username="cove_app", database="cove_init").render_as_string(hide_password=False))
    try:  # migrated as the role
        with psycopg.connect(superuser.rsplit("/", 1)[0] + "/cove_init") as conn:
            tables = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert tables
        assert {t for (t,) in tables} == {"cove_app"}
    finally:
        db.engine.dispose()


def resolved_settings(docs: Sequence[Doc], component: str, secrets: Mapping[str, Mapping[str, str]]) -> Settings:
    """The Settings a component's process builds in its pod: its environment, with each secretKeyRef read from
    ``secrets`` (the operator's) or the Secrets the chart renders."""
    env: dict[str, str] = {}
    for key, value in env_of(docs, component).items():
        if isinstance(value, dict):
            ref = value["secretKeyRef"]
            made = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
            if ref["name"] in made:
                value = base64.b64decode(made[ref["name"]]["data"][ref["key"]]).decode()
            else:
                value = secrets[ref["name"]][ref["key"]]
        env[key] = value
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("COVE_")]:
            patch.delenv(name)
        for key, value in env.items():
            patch.setenv(key, value)
        return Settings()


def test_the_database_url_the_app_gets_carries_the_password_and_sslmode(helm: Helm) -> None:
    """What each process actually connects with, from the rendered pod: the role's password (any character, escaped
    into the URL) and the sslmode the values set, for the bundled database and an external one."""
    mine = {
        "cove-database": {"password": "p@ss:w/rd?", "postgres-password": "root"},
        "cove-studio": {"secret-key": "k"},
    }
    mine |= {"cove-hub": {"api-token": "t" * 32}}
    for sslmode in ("prefer", "verify-full"):
        docs = helm.render("defaults.yaml", postgresql__sslMode=sslmode)
        for component in CONTROL_PLANE:
            url = make_url(resolved_settings(docs, component, mine).db_url)
            assert (url.username, url.password, url.database) == ("cove", "p@ss:w/rd?", "cove"), component
            assert dict(url.query) == {"sslmode": sslmode}, component
    external = {"cove-db-credentials": {"database-url": "postgresql+psycopg://app:pw@db.example.internal/cove"}}
    docs = helm.render("external-db-secret.yaml", externalDatabase__sslMode="require")
    url = make_url(resolved_settings(docs, "server", mine | external).db_url)
    assert (url.username, url.password, url.host, dict(url.query)) == (
        "app",
        "pw",
        "db.example.internal",
        {"sslmode": "require"},
    )
    docs = helm.render("external-db.yaml")  # no sslMode: the URL as given
    assert (
        resolved_settings(docs, "server", mine).db_url
        == "postgresql+psycopg://cove:s3cret@db.example.internal:5432/cove"
    )


def test_rendering_twice_gives_the_same_secrets_and_generates_none(helm: Helm) -> None:
    """Argo CD and `helm template` render without a cluster, where `lookup` sees nothing: a generated secret would
    change on every render and lock Cove out of its database. The chart generates none, so two renders agree to the
    byte, with the operator's Secrets or with inline values, and no template can generate one."""
    inline = {
        "postgresql__auth": {"existingSecret": "", "password": "role-pw", "postgresPassword": "root-pw"},
        "secretKeyExistingSecret": "", "secretKey": "studio-key-0123456789",
        "hub__existingSecret": "", "hub__apiToken": "hub-token-0123456789",
    }  # fmt: skip
    for values in ({}, inline):
        first, again = (
            helm.template("defaults.yaml", values={k.replace("__", "."): v for k, v in values.items()}) for _ in "12"
        )
        assert first.returncode == again.returncode == 0, first.stderr
        assert first.stdout == again.stdout
    docs = documents(first.stdout)
    assert secret_value(docs, f"{PREFIX}-database", "password") == "role-pw"
    assert secret_value(docs, f"{PREFIX}-database", "postgres-password") == "root-pw"
    assert secret_value(docs, f"{PREFIX}-server", "secret-key") == "studio-key-0123456789"
    assert secret_value(docs, f"{PREFIX}-hub", "api-token") == "hub-token-0123456789"
    for name in (f"{PREFIX}-database", f"{PREFIX}-server"):
        assert find(docs, "Secret", name)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    generators = (
        "randAlphaNum",
        "randAlpha",
        "randNumeric",
        "randAscii",
        "randBytes",
        "uuidv4",
        "genPrivateKey",
        "lookup",
    )
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            text = template.read_text()
            assert not [g for g in generators if g in text], template


MISSING_SECRETS = {  # value unset → what the refusal must name
    "secretKeyExistingSecret": ["no studio key", "secretKeyExistingSecret", "secret-key", "or secretKey"],
    "hub.existingSecret": ["no hub API token", "hub.existingSecret", "api-token", "or hub.apiToken"],
    "postgresql.auth.existingSecret": [
        "no database passwords", "postgresql.auth.existingSecret", "postgres-password",
        "postgresql.auth.password and postgresql.auth.postgresPassword", f"kubectl -n {NAMESPACE} create secret",
    ],
}  # fmt: skip


@pytest.mark.parametrize("value", list(MISSING_SECRETS))
def test_a_missing_secret_is_refused_naming_the_value_to_set(helm: Helm, value: str) -> None:
    done = helm.template("defaults.yaml", values={value: ""})
    assert done.returncode != 0
    for words in MISSING_SECRETS[value]:
        assert words in done.stderr, done.stderr
    bare = helm.template("defaults.yaml", secrets=False)  # nothing named at all: refused too
    assert bare.returncode != 0
    assert "The chart generates no secrets" in bare.stderr


def test_external_database_replaces_the_bundled_one(helm: Helm) -> None:
    docs = helm.render("external-db.yaml")
    assert not names(docs, "StatefulSet")
    assert f"{PREFIX}-postgresql" not in names(docs, "Service")
    assert (
        secret_value(docs, f"{PREFIX}-database", "url")
        == "postgresql+psycopg://cove:s3cret@db.example.internal:5432/cove"
    )
    assert "password" not in find(docs, "Secret", f"{PREFIX}-database")["data"]
    docs = helm.render("external-db-secret.yaml")
    assert f"{PREFIX}-database" not in names(docs, "Secret")
    for component in CONTROL_PLANE:
        ref = env_of(docs, component)["COVE_DATABASE_URL"]
        assert ref == {"secretKeyRef": {"name": "cove-db-credentials", "key": "database-url"}}


def test_server_replicas_share_the_rate_limit_store_the_values_name(helm: Helm) -> None:
    server = env_of(helm.render("defaults.yaml"), "server")
    assert "COVE_REDIS_URL" not in server  # one process counts alone
    assert server["COVE_LIMITS_ON_STORE_FAILURE"] == "open"
    docs = helm.render(
        "defaults.yaml", limits__redis__url="redis://:pw@redis.cache:6379/0", limits__onStoreFailure="closed"
    )
    server = env_of(docs, "server")
    assert server["COVE_REDIS_URL"] == {"secretKeyRef": {"name": f"{PREFIX}-server", "key": "redis-url"}}
    assert secret_value(docs, f"{PREFIX}-server", "redis-url") == "redis://:pw@redis.cache:6379/0"  # not in a ConfigMap
    assert server["COVE_LIMITS_ON_STORE_FAILURE"] == "closed"
    docs = helm.render("defaults.yaml", limits__redis__existingSecret="cache", limits__redis__key="redis")
    assert env_of(docs, "server")["COVE_REDIS_URL"] == {"secretKeyRef": {"name": "cache", "key": "redis"}}
    assert f"{PREFIX}-server" not in names(docs, "Secret"), "nothing inline: the chart keeps no Secret of its own"
    refused = helm.template("defaults.yaml", values={"limits.redis.url": "http://redis:6379"})
    assert refused.returncode != 0
    assert "rediss?://" in refused.stderr


def test_traces_go_to_the_collector_the_values_name(helm: Helm) -> None:
    server = env_of(helm.render("defaults.yaml"), "server")
    assert not {"COVE_OTLP_ENDPOINT", "COVE_OTEL_SERVICE_NAME", "COVE_TRACE_SAMPLE_RATIO"} & set(server)  # off
    docs = helm.render(
        "defaults.yaml", traces__otlpEndpoint="http://otel-collector.monitoring:4318", traces__sampleRatio=0.25
    )
    server = env_of(docs, "server")
    assert server["COVE_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
    assert (server["COVE_OTEL_SERVICE_NAME"], server["COVE_TRACE_SAMPLE_RATIO"]) == ("cove", "0.25")
    refused = helm.template("defaults.yaml", values={"traces.otlpEndpoint": "otel-collector:4318"})
    assert refused.returncode != 0
    assert "otlpEndpoint" in refused.stderr


def test_the_chart_can_install_the_rate_limit_store_reachable_only_by_the_server(helm: Helm) -> None:
    docs = helm.render("redis-install.yaml")  # its password in the operator's Secret `cove-redis`
    store = f"{PREFIX}-redis"
    server = env_of(docs, "server")
    assert server["COVE_REDIS_URL"] == f"redis://{store}.{NAMESPACE}.svc:6379/0"
    assert server["COVE_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "cove-redis", "key": "password"}}
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == store]

    pod = find(docs, "Deployment", store)["spec"]["template"]["spec"]
    box = pod["containers"][0]
    assert box["image"] == "docker.io/valkey/valkey:8.1.3"
    assert box["args"][box["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"  # never in the manifest
    password = {"secretKeyRef": {"name": "cove-redis", "key": "password"}}
    assert box["env"] == [{"name": "REDIS_PASSWORD", "valueFrom": password}]
    assert box["args"][box["args"].index("--appendonly") + 1] == "yes"
    assert box["args"][box["args"].index("--maxmemory") + 1] == "200mb"
    assert pod["volumes"][0] == {"name": "data", "persistentVolumeClaim": {"claimName": store}}
    assert find(docs, "PersistentVolumeClaim", store)["spec"]["resources"]["requests"]["storage"] == "2Gi"
    service = find(docs, "Service", store)["spec"]
    assert (service["ports"][0]["port"], service["selector"]["app.kubernetes.io/component"]) == (6379, "redis")

    ingress = find(docs, "NetworkPolicy", store)["spec"]["ingress"]
    peers = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in ingress[0]["from"]]
    assert (peers, ingress[0]["ports"]) == (["server"], [{"port": 6379, "protocol": "TCP"}])
    assert all("namespaceSelector" not in peer for rule in ingress for peer in rule["from"])

    plain = helm.render(
        "defaults.yaml", limits__redis__install__enabled=True, limits__redis__install__password="Inline pw"
    )
    assert secret_value(plain, store, "password") == "Inline pw"
    assert env_of(plain, "server")["COVE_REDIS_PASSWORD"] == {"secretKeyRef": {"name": store, "key": "password"}}
    assert find(plain, "Deployment", store)["spec"]["template"]["spec"]["volumes"][0] == {
        "name": "data",
        "emptyDir": {},
    }
    assert not [d for d in plain if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == store]
    assert not [d for d in helm.render("defaults.yaml") if d["metadata"]["name"] == store]  # off by default

    unset = helm.template("defaults.yaml", values={"limits.redis.install.enabled": True})
    assert unset.returncode != 0
    assert "limits.redis.install.existingSecret" in unset.stderr
    both = helm.template("redis-install.yaml", values={"limits.redis.url": "redis://elsewhere:6379/0"})
    assert both.returncode != 0
    assert "name two stores: choose one" in both.stderr


def test_shared_claims_are_made_kept_and_mounted(helm: Helm) -> None:
    docs = helm.render("defaults.yaml")
    for kind, size in (("models", "100Gi"), ("datasets", "20Gi")):
        claim = find(docs, "PersistentVolumeClaim", f"{PREFIX}-{kind}")
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claim["spec"]["resources"]["requests"]["storage"] == size
        assert "storageClassName" not in claim["spec"], "empty storageClass: the cluster's default"
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for component in ("server", "ui"):
        spec = find(docs, "Deployment", f"{PREFIX}-{component}")["spec"]["template"]["spec"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert claims == {"models": f"{PREFIX}-models", "datasets": f"{PREFIX}-datasets"}
        for kind in ("models", "datasets"):
            assert mounts[f"/var/lib/cove/{kind}"]["name"] == kind
            assert not mounts[f"/var/lib/cove/{kind}"].get("readOnly")
    hub = find(docs, "Deployment", f"{PREFIX}-hub")["spec"]["template"]["spec"]
    assert {"name": "state", "persistentVolumeClaim": {"claimName": f"{PREFIX}-hub"}} in hub["volumes"]
    assert find(docs, "PersistentVolumeClaim", f"{PREFIX}-hub")["spec"]["accessModes"] == ["ReadWriteOnce"]
    docs = helm.render("ingress.yaml")  # storage.models.existingClaim: team-models
    assert f"{PREFIX}-models" not in names(docs, "PersistentVolumeClaim")
    assert env_of(docs, "server")["COVE_MODELS_PVC"] == env_of(docs, "hub")["COVE_MODELS_PVC"] == "team-models"


SERVER_RULES = {  # the calls of studio/backends/kubernetes/backend.py in the release namespace (server/rbac.yaml)
    ("apps", "deployments"): {"get", "list", "create", "patch", "delete"},
    ("", "services"): {"create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "create", "delete"},
    ("batch", "jobs"): {"get", "list", "create", "delete"},
    ("", "secrets"): {"create", "patch", "delete"},
    ("", "pods"): {"list"},
    ("", "pods/log"): {"get"},
    ("coordination.k8s.io", "leases"): {"get", "create", "patch"},  # leader election (studio/leadership.py)
}
HUB_RULES = {
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "create"},
    ("", "events"): {"get", "list", "watch"},
}


def grants(role: Doc) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


# Grants that the recorded scenario does not exercise, each with why it is kept: none today. (A key is
# (namespace, apiGroup, resource, verb); the namespace "" is cluster-scoped.)
UNRECORDED_GRANTS: dict[Permission, str] = {}


@pytest.fixture(scope="module")
def server_seen(tmp_path_factory: pytest.TempPathFactory) -> set[Permission]:
    """Every permission the server's Kubernetes calls needed in tests/kube_calls.py's scenario."""
    return server_calls(tmp_path_factory.mktemp("calls"), namespace=NAMESPACE, build_namespace="ml-builds")


def test_the_servers_roles_grant_exactly_the_calls_it_was_seen_to_make(
    helm: Helm, server_seen: set[Permission]
) -> None:
    """Derived from the code, not kept by hand: every request the backend and the leader Lease sent to a Kubernetes
    API in a scenario of every verb, as RBAC reads it, must be granted by the rendered Roles (else the server would
    be refused it in a cluster), and every grant must have been used (else the Role is wider than the code)."""
    docs = helm.render("builds.yaml")
    roles = {
        NAMESPACE: find(docs, "Role", f"{PREFIX}-server"),
        "ml-builds": find(docs, "Role", f"{PREFIX}-{NAMESPACE}-builds"),
        "": next(d for d in docs if d["kind"] == "ClusterRole"),
    }
    granted = {
        (namespace, group, resource, verb)
        for namespace, role in roles.items()
        for (group, resource), verbs in grants(role).items()
        for verb in verbs
    }
    assert sorted(server_seen - granted) == [], "calls the chart's Roles do not allow"
    assert sorted(granted - server_seen) == sorted(UNRECORDED_GRANTS), "grants no recorded call used"
    assert {(g, r) for ns, g, r, _ in server_seen if ns == NAMESPACE} == set(SERVER_RULES)  # the scenario is whole


def test_rbac_grants_exactly_what_the_server_and_hub_use(helm: Helm) -> None:
    docs = helm.render("defaults.yaml")
    assert grants(find(docs, "Role", f"{PREFIX}-server")) == SERVER_RULES
    assert grants(find(docs, "Role", f"{PREFIX}-hub")) == HUB_RULES
    for component in ("server", "hub"):
        binding = find(docs, "RoleBinding", f"{PREFIX}-{component}")
        assert binding["roleRef"]["name"] == f"{PREFIX}-{component}"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"{PREFIX}-{component}", "namespace": NAMESPACE}
        ]
        pod = find(docs, "Deployment", f"{PREFIX}-{component}")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"{PREFIX}-{component}"
        assert pod["automountServiceAccountToken"] is True
    for component in ("ui", "playground"):
        pod = find(docs, "Deployment", f"{PREFIX}-{component}")["spec"]["template"]["spec"]
        assert "serviceAccountName" not in pod
        assert pod["automountServiceAccountToken"] is False
    (cluster_role,) = (d for d in docs if d["kind"] == "ClusterRole")
    assert grants(cluster_role) == {("", "nodes"): {"list"}}
    assert NAMESPACE in cluster_role["metadata"]["name"], "cluster-scoped: releases in two namespaces must not collide"
    (cluster_binding,) = (d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert cluster_binding["subjects"][0]["name"] == f"{PREFIX}-server"
    no_nodes = helm.render("defaults.yaml", rbac__readNodes=False)
    assert not names(no_nodes, "ClusterRole")
    assert names(no_nodes, "Role") == names(docs, "Role")
    none = helm.render("defaults.yaml", rbac__create=False)
    assert not {d["kind"] for d in none} & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_fine_tune_jobs_get_their_image_and_kueue_queue_and_the_server_may_run_them(helm: Helm) -> None:
    """finetune values reach the server only; by default they are the server's own defaults (no queue); the server's
    Role lets it create, list and delete Jobs and read their pods' logs in the release namespace."""
    defaults = Settings.model_fields
    server = env_of(helm.render("defaults.yaml"), "server")
    assert server["COVE_TRAINER_IMAGE"] == defaults["trainer_image"].default == "cove/fine-tune:0.1.0"
    assert server["COVE_KUEUE_QUEUE"] == defaults["kueue_queue"].default == ""
    docs = helm.render(
        "defaults.yaml", finetune__kueueQueue="team-a",
        finetune__image={"repository": "registry.example.com/mirror/cove-fine-tune", "tag": "0.1.0-cu13"},
    )  # fmt: skip
    server = env_of(docs, "server")
    assert server["COVE_KUEUE_QUEUE"] == "team-a"
    assert server["COVE_TRAINER_IMAGE"] == "registry.example.com/mirror/cove-fine-tune:0.1.0-cu13"
    for component in ("ui", "playground", "hub"):
        assert not {"COVE_KUEUE_QUEUE", "COVE_TRAINER_IMAGE"} & set(env_of(docs, component)), component
    rules = grants(find(docs, "Role", f"{PREFIX}-server"))
    assert {"get", "list", "create", "delete"} <= rules[("batch", "jobs")]
    assert rules[("", "pods")] == {"list"}
    assert rules[("", "pods/log")] == {"get"}


def test_hpa_values_hand_scaling_to_horizontal_pod_autoscalers(helm: Helm) -> None:
    """autoscaling.hpa.enabled: the controller makes an HPA per autoscaled deployment instead of scaling it itself,
    and the install notes say what must serve the HPAs their metric. The server may manage HPAs either way."""
    on, off = helm.render("hpa-on.yaml"), helm.render("gpu-pool.yaml")
    assert env_of(on, "server")["COVE_AUTOSCALER"] == "hpa"
    for docs in (off, helm.render("defaults.yaml")):
        assert env_of(docs, "server")["COVE_AUTOSCALER"] == "controller"
    for component in ("ui", "playground", "hub"):
        assert "COVE_AUTOSCALER" not in env_of(on, component), component
    assert checksums(on)[f"Deployment/{PREFIX}-server"] != checksums(off)[f"Deployment/{PREFIX}-server"]
    for docs in (on, off):
        assert grants(find(docs, "Role", f"{PREFIX}-server")) == SERVER_RULES
    notes = helm.notes("hpa-on.yaml")
    served = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/cove_gateway_requests_in_flight"
    assert "External metric cove_gateway_requests_in_flight" in notes
    assert f"svc/{PREFIX}-server:8080/metrics" in notes
    assert f"kubectl get --raw {served}" in notes
    assert "cove_gateway_requests_in_flight" not in helm.notes("defaults.yaml")


BUILD_SETTINGS = (
    "COVE_REGISTRY", "COVE_REGISTRY_SECRET", "COVE_BUILD_NAMESPACE", "COVE_BUILDER_IMAGE", "COVE_PUSHER_IMAGE",
)  # fmt: skip
BUILD_RULES = {  # the calls of KubernetesBackend.build in the build namespace
    ("", "secrets"): {"create", "patch", "delete"},
    ("batch", "jobs"): {"get", "create"},
    ("", "pods"): {"list"},
    ("", "pods/log"): {"get"},
}
BUILD_POD_SECURITY = {f"pod-security.kubernetes.io/{mode}": "baseline" for mode in ("enforce", "audit", "warn")}


def test_builds_run_in_a_baseline_namespace_where_the_server_may_do_only_that(helm: Helm) -> None:
    """Kaniko runs as root: its Jobs go to a namespace of their own under "baseline", where the server's
    ServiceAccount (from the release namespace) may handle Secrets and Jobs and read pods and logs, nothing more."""
    docs = helm.render("builds.yaml")
    server = env_of(docs, "server")
    assert {k: server[k] for k in BUILD_SETTINGS} == {
        "COVE_REGISTRY": "registry.example.com:5000/ml/images",
        "COVE_REGISTRY_SECRET": "ml-push",
        "COVE_BUILD_NAMESPACE": "ml-builds",
        "COVE_BUILDER_IMAGE": "registry.example.com:5000/mirror/kaniko-executor:v1.23.2",
        "COVE_PUSHER_IMAGE": "registry.example.com:5000/mirror/crane:v0.22.1",  # no digest given: by tag
    }
    for component in ("ui", "playground", "hub"):
        assert not set(BUILD_SETTINGS) & set(env_of(docs, component)), component
    namespace = find(docs, "Namespace", "ml-builds")
    pod_security = {k: v for k, v in namespace["metadata"]["labels"].items() if k.startswith("pod-security.")}
    assert pod_security == BUILD_POD_SECURITY
    assert namespace["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", "it holds the push Secret"
    name = f"{PREFIX}-{NAMESPACE}-builds"  # two releases named alike in two namespaces may share the build namespace
    role, binding = find(docs, "Role", name), find(docs, "RoleBinding", name)
    assert grants(role) == BUILD_RULES
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{PREFIX}-server", "namespace": NAMESPACE}]
    there = sorted(
        f"{d['kind']}/{d['metadata']['name']}" for d in docs if d["metadata"].get("namespace") == "ml-builds"
    )
    assert there == [f"NetworkPolicy/{name}", f"Role/{name}", f"RoleBinding/{name}"], "no pods of the chart's there"
    assert grants(find(docs, "Role", f"{PREFIX}-server")) == SERVER_RULES, "the release namespace's Role is as it was"
    push = "kubectl -n ml-builds create secret docker-registry ml-push --docker-server=registry.example.com:5000 "
    assert push in helm.notes("builds.yaml")


def test_builds_options_and_defaults(helm: Helm) -> None:
    """An existing build namespace (the notes say how to label it), no RBAC, builds off; and the chart's defaults
    are the server's own."""
    docs = helm.render("builds.yaml")
    existing = helm.render("builds.yaml", builds__createNamespace=False)
    assert not names(existing, "Namespace")
    assert names(existing, "Role") == names(docs, "Role")
    label = "kubectl label namespace ml-builds pod-security.kubernetes.io/enforce=baseline"
    assert label in helm.notes("builds.yaml", builds__createNamespace=False)
    assert label not in helm.notes("builds.yaml")
    no_rbac = helm.render("builds.yaml", rbac__create=False)
    assert not {d["kind"] for d in no_rbac} & {"Role", "RoleBinding"}
    assert env_of(no_rbac, "server")["COVE_BUILD_NAMESPACE"] == "ml-builds"
    # A release that sets only a registry builds where, and with what, the server would by default.
    minimal = env_of(
        helm.render("defaults.yaml", builds__enabled=True, builds__registry="registry.example.com/t"), "server"
    )
    defaults = Settings.model_fields
    assert minimal["COVE_BUILD_NAMESPACE"] == defaults["build_namespace"].default == "cove-builds"
    assert minimal["COVE_BUILDER_IMAGE"] == defaults["builder_image"].default
    assert minimal["COVE_PUSHER_IMAGE"] == defaults["pusher_image"].default  # tag and digest
    assert "@sha256:" in minimal["COVE_PUSHER_IMAGE"]
    assert minimal["COVE_REGISTRY_SECRET"] == defaults["registry_secret"].default == ""
    off = helm.render("defaults.yaml")
    assert not set(BUILD_SETTINGS) & set(env_of(off, "server"))
    assert not names(off, "Namespace")
    assert names(off, "Role") == {f"{PREFIX}-server", f"{PREFIX}-hub"}


METADATA_V4 = (  # the clouds' metadata and credential endpoints (values.yaml cites each one's documentation)
    "169.254.169.254/32",  # AWS, GCP (metadata.google.internal), Azure, OCI, OpenStack, DigitalOcean, …
    "169.254.170.2/32",  # AWS ECS task credentials
    "169.254.170.23/32",  # AWS EKS Pod Identity agent
    "100.100.100.200/32",  # Alibaba Cloud
    "169.254.0.23/32",  # Tencent Cloud
    "192.0.0.192/32",  # Oracle Cloud Classic
)
METADATA_V6 = ("fd00:ec2::254/128", "fd00:ec2::23/128")  # AWS IMDS and EKS Pod Identity over IPv6
ANYWHERE_BUT_METADATA = [
    {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(METADATA_V4)}},
    {"ipBlock": {"cidr": "::/0", "except": list(METADATA_V6)}},
]


def test_the_common_cloud_metadata_addresses_are_denied_in_each_family(helm: Helm) -> None:
    """Each egress policy of users' code denies every listed address, IPv4 under 0.0.0.0/0 and IPv6 under ::/0 (the
    API refuses an except outside its cidr); an operator's own list replaces the defaults."""
    docs = helm.render("builds.yaml")
    egress = [d for d in docs if d["kind"] == "NetworkPolicy" and "Egress" in d["spec"]["policyTypes"]]
    assert len(egress) == 3  # notebooks, model servers and jobs, image builds
    for policy in egress:
        blocks = {b["ipBlock"]["cidr"]: set(b["ipBlock"].get("except", [])) for b in policy["spec"]["egress"][0]["to"]}
        assert blocks == {"0.0.0.0/0": set(METADATA_V4), "::/0": set(METADATA_V6)}, policy["metadata"]["name"]
    docs = helm.render("defaults.yaml", networkPolicy__deniedEgressCidrs=["10.0.0.0/8"])
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy" and "Egress" in d["spec"]["policyTypes"]):
        assert policy["spec"]["egress"][0]["to"] == [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}},
            {"ipBlock": {"cidr": "::/0"}},
        ]


def test_builds_cannot_reach_the_metadata_service_or_the_database(helm: Helm) -> None:
    """A Dockerfile's RUN steps are users' code, run as root: every pod of the build namespace may connect anywhere
    but the metadata service, and to DNS; nothing may connect to it; and the database's policy names pods of the
    release namespace only, so no build pod gets in whatever its labels. Without networkPolicy, no policy at all."""
    docs = helm.render("builds.yaml")
    policy = find(docs, "NetworkPolicy", f"{PREFIX}-{NAMESPACE}-builds")
    assert policy["metadata"]["namespace"] == "ml-builds"
    assert policy["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],  # and no ingress rule: nothing is let in
        "egress": [
            {"to": ANYWHERE_BUT_METADATA},
            {
                "to": [{"namespaceSelector": {}}],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            },
        ],
    }
    db_policy = find(docs, "NetworkPolicy", f"{PREFIX}-postgresql")
    assert db_policy["metadata"]["namespace"] == NAMESPACE
    (rule,) = db_policy["spec"]["ingress"]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"]), "a namespaceSelector could let builds in"
    assert "keeps their RUN steps off the metadata service" in helm.notes("builds.yaml")
    unguarded = helm.render("builds.yaml", "no-networkpolicy.yaml")
    assert not names(unguarded, "NetworkPolicy")
    assert names(unguarded, "Role") == names(docs, "Role"), "only the policy goes"
    assert "can reach the cloud metadata service" in helm.notes("builds.yaml", "no-networkpolicy.yaml")


NOTEBOOK_POD = {  # KubeSpawner's labels
    "component": "singleuser-server",
    "app.kubernetes.io/component": "singleuser-server",
    "hub.jupyter.org/username": "ada",
}
BACKEND_PODS = {  # what Cove's backend makes: users' models and code
    "model server": manifests.labels("llama-8b", manifests.COMPONENT),
    "fine-tune job": manifests.labels("llama-8b-lora", "job"),
}


def test_user_workloads_cannot_reach_the_database_or_the_metadata_service(helm: Helm) -> None:
    docs = helm.render("defaults.yaml")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    egress_policies = [p for p in policies if "Egress" in p["spec"]["policyTypes"]]
    templates = dict(pod_templates(docs))
    postgres_labels = templates[f"StatefulSet/{PREFIX}-postgresql"]["metadata"]["labels"]
    (db_policy,) = (p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], postgres_labels))
    assert db_policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = db_policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    allowed = [
        w
        for w, t in templates.items()
        for peer in rule["from"]
        if selects(peer["podSelector"]["matchLabels"], t["metadata"]["labels"])
    ]
    assert sorted(allowed) == sorted(f"Deployment/{PREFIX}-{c}" for c in CONTROL_PLANE)
    for user_pod in (NOTEBOOK_POD, *BACKEND_PODS.values()):
        assert not any(selects(peer["podSelector"]["matchLabels"], user_pod) for peer in rule["from"])
        (egress,) = (p for p in egress_policies if selects(p["spec"]["podSelector"]["matchLabels"], user_pod))
        assert egress["spec"]["policyTypes"] == ["Egress"]
        blocks = [peer["ipBlock"] for r in egress["spec"]["egress"] for peer in r["to"] if "ipBlock" in peer]
        assert [{"ipBlock": b} for b in blocks] == ANYWHERE_BUT_METADATA
    (notebooks,) = (p for p in egress_policies if selects(p["spec"]["podSelector"]["matchLabels"], NOTEBOOK_POD))
    reachable = {
        (w, port["port"])
        for r in notebooks["spec"]["egress"]
        for peer in r["to"]
        if "podSelector" in peer
        for w, t in templates.items()
        if selects(peer["podSelector"]["matchLabels"], t["metadata"]["labels"])
        for port in r["ports"]
    }
    assert reachable == {(f"Deployment/{PREFIX}-hub", 8081), (f"Deployment/{PREFIX}-server", 8080)}
    assert not [d for d in helm.render("no-networkpolicy.yaml") if d["kind"] == "NetworkPolicy"]
    external = names(helm.render("external-db.yaml"), "NetworkPolicy")
    assert external == names(docs, "NetworkPolicy") - {f"{PREFIX}-postgresql"}, "no database policy without a database"


INGRESS_NGINX = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
NOTEBOOKS = {"podSelector": {"matchLabels": {"component": "singleuser-server"}}}
MODEL_SERVERS = {
    "app.kubernetes.io/component": manifests.COMPONENT,
    "app.kubernetes.io/managed-by": manifests.MANAGED_BY,
}


def pods_of(component: str) -> dict[str, Any]:
    """The peer of a Cove component's pods (its selector labels), in the release namespace."""
    labels = {"app.kubernetes.io/name": "cove", "app.kubernetes.io/instance": RELEASE}
    return {"podSelector": {"matchLabels": labels | {"app.kubernetes.io/component": component}}}


def ingress_policy(pods: Mapping[str, str], rules: Sequence[tuple[int, Sequence[Doc]]]) -> Doc:
    """The spec of an ingress policy: ``pods`` admit, on each port, only its peers."""
    return {
        "podSelector": {"matchLabels": dict(pods)},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": list(peers), "ports": [{"port": port, "protocol": "TCP"}]} for port, peers in rules],
    }


def admitted(policy: Doc, templates: Mapping[str, Doc]) -> set[tuple[str, int]]:
    """Who a policy lets in on which port, in words: the chart's workloads and the user pods its pod selectors
    match (release namespace), and its other peers as JSON."""
    users = {"notebook": NOTEBOOK_POD, **BACKEND_PODS}
    found = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            if set(peer) == {"podSelector"}:
                labels = peer["podSelector"]["matchLabels"]
                who = [w for w, t in templates.items() if selects(labels, t["metadata"]["labels"])]
                who += [name for name, pod in users.items() if selects(labels, pod)]
                assert who, f"{peer} selects no pod"
            else:
                who = [json.dumps(peer, sort_keys=True)]
            found |= {(w, port["port"]) for w in who for port in rule["ports"]}
    return found


def test_each_face_admits_only_the_ingress_controller_and_the_parts_that_call_it(helm: Helm) -> None:
    """The studio UI and the playground: the ingress controller only. The hub's proxy: the ingress controller, the UI
    (its Notebooks page calls the hub's API through the proxy) and the server (its API asks the hub whose a
    notebook's token is); the hub's API: notebook pods and the hub itself
    (its proxy and culler reach the API through the Service). The gateway: the ingress controller, notebook pods,
    the playground and the UI. Each policy selects its component's pods and no user pod."""
    docs = helm.render("defaults.yaml")
    templates = dict(pod_templates(docs))
    ports = {c: container(docs, c)["ports"][0]["containerPort"] for c in ("ui", "playground", "hub", "server")}
    hub_api = {p["name"]: p["containerPort"] for p in container(docs, "hub")["ports"]}["api"]
    expected = {
        "ui": [(ports["ui"], [INGRESS_NGINX])],
        "playground": [(ports["playground"], [INGRESS_NGINX])],
        "hub": [
            (ports["hub"], [INGRESS_NGINX, pods_of("ui"), pods_of("server")]),
            (hub_api, [NOTEBOOKS, pods_of("hub")]),
        ],
        "server": [(ports["server"], [INGRESS_NGINX, NOTEBOOKS, pods_of("playground"), pods_of("ui")])],
    }
    nginx = json.dumps(INGRESS_NGINX, sort_keys=True)
    in_words = {
        "ui": {(nginx, 8501)},
        "playground": {(nginx, 7860)},
        "hub": {
            (nginx, 8000),
            (f"Deployment/{PREFIX}-ui", 8000),
            (f"Deployment/{PREFIX}-server", 8000),
            ("notebook", 8081),
            (f"Deployment/{PREFIX}-hub", 8081),
        },
        "server": {(nginx, 8080), ("notebook", 8080)}
        | {(f"Deployment/{PREFIX}-{c}", 8080) for c in ("playground", "ui")},
    }
    for component, rules in expected.items():
        policy = find(docs, "NetworkPolicy", f"{PREFIX}-{component}-ingress")
        assert policy["metadata"]["namespace"] == NAMESPACE
        assert policy["spec"] == ingress_policy(pods_of(component)["podSelector"]["matchLabels"], rules), component
        guarded = [
            w
            for w, t in templates.items()
            if selects(policy["spec"]["podSelector"]["matchLabels"], t["metadata"]["labels"])
        ]
        assert guarded == [f"Deployment/{PREFIX}-{component}"]
        assert not any(
            selects(policy["spec"]["podSelector"]["matchLabels"], pod) for pod in (NOTEBOOK_POD, *BACKEND_PODS.values())
        )
        assert admitted(policy, templates) == in_words[component], component
    # The label notebook pods carry: KubeSpawner's default, which hub/jupyterhub_config.py keeps.
    assert KubeSpawner.component_label.default_value == NOTEBOOK_POD["component"] == "singleuser-server"


def test_model_servers_admit_only_the_gateway(helm: Helm) -> None:
    """Pods the backend makes for a deployment (manifests.labels, in the release namespace, on the runtimes'
    container port) admit the gateway only: notebooks and other models go through it. Fine-tune jobs serve nothing
    and are not selected. Kubelet probes come from the node, which NetworkPolicies do not block: no rule for them."""
    docs = helm.render("defaults.yaml")
    templates = dict(pod_templates(docs))
    policy = find(docs, "NetworkPolicy", f"{PREFIX}-model-servers-ingress")
    assert policy["spec"] == ingress_policy(MODEL_SERVERS, [(CONTAINER_PORT, [pods_of("server")])])
    assert admitted(policy, templates) == {(f"Deployment/{PREFIX}-server", CONTAINER_PORT)}
    selector = policy["spec"]["podSelector"]["matchLabels"]
    spec = WorkloadSpec(
        name="llama-8b",
        runtime=RuntimeKind.VLLM,
        model="meta-llama/Llama-3.1-8B-Instruct",
        model_revision=None,
        image="docker.io/vllm/vllm-openai:v0.11.0",
        resources=Resources(cpu=8, memory_mib=65536, gpus=1),
    )
    server = manifests.model_server(
        spec, container_launch(spec), manifests.Target(namespace=NAMESPACE, models_pvc="models")
    )
    pod = server["spec"]["template"]
    assert selects(selector, pod["metadata"]["labels"])
    assert server["metadata"]["namespace"] == env_of(docs, "server")["COVE_KUBE_NAMESPACE"] == NAMESPACE
    assert [p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]] == [CONTAINER_PORT]
    assert not selects(selector, BACKEND_PODS["fine-tune job"])
    assert not selects(selector, NOTEBOOK_POD)
    assert not [w for w, t in templates.items() if selects(selector, t["metadata"]["labels"])]


INGRESS_POLICIES = {f"{PREFIX}-{c}-ingress" for c in ("ui", "playground", "hub", "server", "model-servers")}


def test_ingress_peers_are_values_and_no_policy_renders_without_network_policy(helm: Helm) -> None:
    """networkPolicy.ingressControllers replaces the ingress controller in every face's policy; empty, the UI and the
    playground admit nobody (port-forward goes through the kubelet) and the hub and the gateway only Cove's parts,
    never everyone (a rule without peers would admit all). networkPolicy.extraGatewayPeers (Prometheus) reach the
    gateway only. networkPolicy.enabled=false: no NetworkPolicy at all, whatever else is set."""
    traefik = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
    }
    load_balancer = {"ipBlock": {"cidr": "203.0.113.0/24"}}
    docs = helm.render("defaults.yaml", networkPolicy__ingressControllers=[traefik, load_balancer])
    for component in ("ui", "playground", "hub", "server"):
        (first, *_) = find(docs, "NetworkPolicy", f"{PREFIX}-{component}-ingress")["spec"]["ingress"]
        assert first["from"][:2] == [traefik, load_balancer], component
        assert INGRESS_NGINX not in first["from"], component
    closed = helm.render("defaults.yaml", networkPolicy__ingressControllers=[])
    assert_valid(*(d for d in (*docs, *closed) if d["kind"] == "NetworkPolicy"))
    for component in ("ui", "playground"):
        assert find(closed, "NetworkPolicy", f"{PREFIX}-{component}-ingress")["spec"]["ingress"] == []
    hub = find(closed, "NetworkPolicy", f"{PREFIX}-hub-ingress")["spec"]["ingress"]
    assert [r["from"] for r in hub] == [[pods_of("ui"), pods_of("server")], [NOTEBOOKS, pods_of("hub")]]
    server = find(closed, "NetworkPolicy", f"{PREFIX}-server-ingress")["spec"]["ingress"]
    assert [r["from"] for r in server] == [[NOTEBOOKS, pods_of("playground"), pods_of("ui")]]
    assert all(r["from"] for d in closed if d["kind"] == "NetworkPolicy" for r in d["spec"].get("ingress", []))

    prometheus = values_of("hpa-on.yaml")["networkPolicy"]["extraGatewayPeers"]
    scraped = helm.render("hpa-on.yaml")
    (rule,) = find(scraped, "NetworkPolicy", f"{PREFIX}-server-ingress")["spec"]["ingress"]
    assert rule["from"] == [INGRESS_NGINX, NOTEBOOKS, pods_of("playground"), pods_of("ui"), *prometheus]
    for name in INGRESS_POLICIES - {f"{PREFIX}-server-ingress"}:
        peers = [p for r in find(scraped, "NetworkPolicy", name)["spec"]["ingress"] for p in r["from"]]
        assert not [p for p in peers if p in prometheus], name
    assert "networkPolicy.extraGatewayPeers" not in helm.notes("hpa-on.yaml")
    assert "add its pods to networkPolicy.extraGatewayPeers" in helm.notes(
        "hpa-on.yaml", networkPolicy__extraGatewayPeers=[]
    )
    assert "only networkPolicy.ingressControllers" in helm.notes("defaults.yaml")

    existing = {f"{PREFIX}-postgresql", f"{PREFIX}-notebooks-egress", f"{PREFIX}-workloads-egress"}
    for values_file in ("defaults.yaml", "ingress.yaml", "hpa-on.yaml"):
        assert names(helm.render(values_file), "NetworkPolicy") == INGRESS_POLICIES | existing, values_file
    for values_files in (
        ["no-networkpolicy.yaml"],
        ["ingress.yaml", "no-networkpolicy.yaml"],
        ["hpa-on.yaml", "no-networkpolicy.yaml"],
    ):
        assert not names(helm.render(*values_files), "NetworkPolicy"), values_files


def test_ingress_routes_each_host_to_its_face(helm: Helm) -> None:
    docs = helm.render("ingress.yaml")
    ingress = find(docs, "Ingress", PREFIX)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    routes = {
        r["host"]: (p["backend"]["service"]["name"], p["backend"]["service"]["port"]["name"])
        for r in ingress["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    assert routes == {
        "api.cove.example.com": (f"{PREFIX}-server", "http"),
        "cove.example.com": (f"{PREFIX}-ui", "http"),
        "chat.cove.example.com": (f"{PREFIX}-playground", "http"),
        "notebooks.cove.example.com": (f"{PREFIX}-hub", "http"),
    }
    assert env_of(docs, "server")["COVE_PUBLIC_URL"] == "https://api.cove.example.com"  # TLS on that host
    assert env_of(docs, "playground")["COVE_PUBLIC_URL"] == f"http://{PREFIX}-server:8080"
    for component in ("server", "ui", "playground", "hub"):
        assert container(docs, component)["image"] == "registry.example.com/ml/cove:0.1.0"
    template = find(docs, "Deployment", f"{PREFIX}-server")["spec"]["template"]
    assert template["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    assert template["spec"]["nodeSelector"] == {"cove.dev/role": "control-plane"}
    assert template["spec"]["tolerations"][0]["key"] == "cove.dev/role"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert "nodeSelector" not in find(docs, "Deployment", f"{PREFIX}-ui")["spec"]["template"]["spec"]
    one_host = helm.render("defaults.yaml", ingress__enabled=True, ingress__hosts={"ui": "cove.example.com"})
    assert [r["host"] for r in find(one_host, "Ingress", PREFIX)["spec"]["rules"]] == ["cove.example.com"]
    assert env_of(helm.render("defaults.yaml", publicUrl="https://gw.example.com/"), "server")["COVE_PUBLIC_URL"] == (
        "https://gw.example.com"
    )
    assert not names(helm.render("defaults.yaml"), "Ingress")


def test_install_notes_say_how_to_reach_each_face(helm: Helm) -> None:
    notes = helm.notes("defaults.yaml")
    services = names(helm.render("defaults.yaml"), "Service")
    for face, port in (("ui", 8501), ("playground", 7860), ("hub", 8000), ("server", 8080)):
        line = f"kubectl -n {NAMESPACE} port-forward svc/{PREFIX}-{face} {port}"
        assert line in notes
        assert f"{PREFIX}-{face}" in services
    assert f"deploy/{PREFIX}-server -- cove key create" in notes
    assert "No pools are configured" in notes
    assert "No pools are configured" not in helm.notes("gpu-pool.yaml")
    behind_ingress = helm.notes("ingress.yaml")
    assert "https://api.cove.example.com/v1" in behind_ingress
    assert "http://cove.example.com" in behind_ingress
    assert "port-forward" not in behind_ingress
    for text in (notes, behind_ingress):
        assert "The playground chats as whoever is logged in" in text


REFUSED = {
    "latest tag": ({"image": {"tag": "latest"}}, ["at '/image/tag'", "'latest' does not match pattern"]),
    "Latest postgres": ({"postgresql": {"image": {"tag": "Latest"}}}, ["at '/postgresql/image/tag'", "'Latest'"]),
    "tag in repository": ({"image": {"repository": "cove/cove:0.1.0"}}, ["at '/image/repository'"]),
    "unknown key": ({"replicaCount": 2}, ["additional properties 'replicaCount' not allowed"]),
    "unknown nested key": ({"hub": {"idleTimeout": 60}}, ["at '/hub'", "'idleTimeout' not allowed"]),
    "gaming pool": (
        {"pools": [{"name": "fun", "purpose": "gaming"}]},
        ["at '/pools/0/purpose'", "value must be one of 'dev', 'train', 'serve', 'any'"],
    ),
    "sharing": (
        {"pools": [{"name": "p", "sharing": "time"}]},
        ["at '/pools/0/sharing'", "'none', 'whole', 'hami', 'mig'"],
    ),
    "nameless pool": ({"pools": [{"purpose": "dev"}]}, ["at '/pools/0'", "missing property 'name'"]),
    "pool name": ({"pools": [{"name": "GPU_pool"}]}, ["at '/pools/0/name'"]),
    "fractional gpus": ({"pools": [{"name": "p", "gpuCount": 1.5}]}, ["at '/pools/0/gpuCount'"]),
    "twice the same pool": (
        {"pools": [{"name": "p"}, {"name": "p"}]},
        ['pools: the name "p" is used twice; each pool needs its own name'],
    ),
    "no database": (
        {"postgresql": {"enabled": False}},
        ["no database: postgresql.enabled is false, so set externalDatabase.url", "externalDatabase.existingSecret"],
    ),
    "mysql": (
        {"postgresql": {"enabled": False}, "externalDatabase": {"url": "mysql://db/cove"}},
        ["at '/externalDatabase/url'"],
    ),
    "ingress without hosts": (
        {"ingress": {"enabled": True}},
        ["ingress.enabled is true but ingress.hosts names no host"],
    ),
    "size": ({"storage": {"models": {"size": "lots"}}}, ["at '/storage/models/size'"]),
    "access mode": ({"storage": {"datasets": {"accessModes": ["RWX"]}}}, ["at '/storage/datasets/accessModes/0'"]),
    "unknown autoscaling key": (
        {"autoscaling": {"hpa": {"enabled": True, "metric": "cpu"}}},
        ["at '/autoscaling/hpa'", "'metric' not allowed"],
    ),
    "builds without a registry": (
        {"builds": {"enabled": True}},
        ["builds.enabled is true but builds.registry is empty", "registry.example.com/team"],
    ),
    "latest builder": (
        {"builds": {"builderImage": {"tag": "latest"}}},
        ["at '/builds/builderImage/tag'", "'latest' does not match pattern"],
    ),
    "latest fine-tune image": (
        {"finetune": {"image": {"repository": "cove/fine-tune", "tag": "latest"}}},
        ["at '/finetune/image/tag'", "'latest' does not match pattern"],
    ),
    "a queue that cannot be a label": ({"finetune": {"kueueQueue": "Team A"}}, ["at '/finetune/kueueQueue'"]),
    "registry as a URL": ({"builds": {"registry": "https://registry.example.com"}}, ["at '/builds/registry'"]),
    "an empty network peer": (
        {"networkPolicy": {"ingressControllers": [{}]}},
        ["at '/networkPolicy/ingressControllers/0'"],
    ),
    "a misspelt selector": (
        {"networkPolicy": {"ingressControllers": [{"namespaceSelector": {"matchLabel": {"name": "nginx"}}}]}},
        ["at '/networkPolicy/ingressControllers/0/namespaceSelector'", "'matchLabel' not allowed"],
    ),
    "a selector operator": (
        {
            "networkPolicy": {
                "extraGatewayPeers": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]
            }
        },
        ["at '/networkPolicy/extraGatewayPeers/0/podSelector/matchExpressions/0/operator'"],
    ),
    "builds in the release namespace": (
        {"builds": {"enabled": True, "registry": "registry.example.com/team", "namespace": NAMESPACE}},
        [f'builds.namespace is the release namespace "{NAMESPACE}"', "a namespace of their own"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_values_are_refused_with_a_reason(helm: Helm, tmp_path: Path, case: str) -> None:
    values, messages = REFUSED[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    done = helm.template(bad)
    assert done.returncode != 0
    assert not done.stdout.strip()
    for message in messages:
        assert message in done.stderr, done.stderr
    if "values don't meet the specifications of the schema" in done.stderr:  # lint only logs a template's fail
        lint = helm.run("lint", "--strict", str(CHART), "--values", str(SECRETS), "--values", str(bad))
        assert lint.returncode != 0, f"helm lint let {case!r} through"


# ------------------------------------------------------------------------------------------------ the chart itself


def schema_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema that describes a value: properties, items, additionalProperties, definitions."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from schema_nodes(child, f"{path}.{key}")
    for key, child in (node.get("definitions") or {}).items():
        yield from schema_nodes(child, f"#{key}")
    for key in ("items", "additionalProperties"):
        yield from schema_nodes(node.get(key), f"{path}[{key}]")
    for key in ("oneOf", "anyOf", "allOf"):
        for i, child in enumerate(node.get(key) or []):
            yield from schema_nodes(child, f"{path}<{key}{i}>")


OPEN_SHAPES = {"#resources", "#env[items]", "#tolerations[items]"}  # Kubernetes owns these shapes


def test_schema_describes_every_value_and_closes_our_objects() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, node in schema_nodes(schema):
        if "$ref" in node or path.endswith("[additionalProperties]"):
            continue
        assert node.get("description"), f"{path or '(root)'} has no description"
        if "properties" in node and path not in OPEN_SHAPES:
            assert node.get("additionalProperties") is False, f"{path or '(root)'} accepts unknown keys"
    for path, node in schema_nodes(schema):
        for key in node.get("properties") or {}:
            assert node["properties"][key].get("description"), f"{path}.{key} has no description"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert set(schema["required"]) <= set(values)


def test_versions_agree() -> None:
    """The chart's appVersion, the default image tag and the package version are one version."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    project = (ROOT / "pyproject.toml").read_text()
    assert chart["appVersion"] == values["image"]["tag"] == values["notebooks"]["image"]["tag"]
    assert f'version = "{chart["appVersion"]}"' in project
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == ">=1.33.0-0"


def test_every_face_shares_one_login_and_the_server_talks_to_the_provider(helm: Helm) -> None:
    oidc = {"issuer": "https://sso.example.com/realms/team", "clientId": "cove", "clientSecret": "s3cret"}
    docs = helm.render("ingress.yaml", auth__oidc=oidc)
    faces = {c: env_of(docs, c) for c in ("server", "ui", "playground", "hub")}
    for component, env in faces.items():
        assert (env["COVE_LOGIN"], env["COVE_AUTH_URL"]) == ("true", "https://api.cove.example.com"), component
        assert env["COVE_SESSION_DOMAIN"] == ".cove.example.com", component  # the domain every face's host is in
        assert env["COVE_UI_PUBLIC_URL"] == "http://cove.example.com", component
        assert env["COVE_PLAYGROUND_PUBLIC_URL"] == "http://chat.cove.example.com", component
    server = faces["server"]
    assert {k: v for k, v in server.items() if k.startswith("COVE_OIDC_")} == {
        "COVE_OIDC_ISSUER": "https://sso.example.com/realms/team",
        "COVE_OIDC_CLIENT_ID": "cove",
        "COVE_OIDC_CLIENT_SECRET": {"secretKeyRef": {"name": f"{PREFIX}-oidc", "key": "client-secret"}},
        "COVE_OIDC_SCOPES": "openid profile email",
        "COVE_OIDC_USERNAME_CLAIM": "preferred_username",
        "COVE_OIDC_GROUPS_CLAIM": "groups",
        "COVE_OIDC_ADMIN_GROUP": "cove-admins",
    }
    assert secret_value(docs, f"{PREFIX}-oidc", "client-secret") == "s3cret"
    assert "COVE_OIDC_CLIENT_SECRET" not in faces["ui"]  # only the server talks to the provider

    mine = helm.render("ingress.yaml", auth__oidc={**oidc, "clientSecret": "", "existingSecret": "team-sso"})
    assert env_of(mine, "server")["COVE_OIDC_CLIENT_SECRET"] == {
        "secretKeyRef": {"name": "team-sso", "key": "client-secret"}
    }
    assert f"{PREFIX}-oidc" not in names(mine, "Secret")

    plain = helm.render("defaults.yaml")  # no provider: passwords; no hosts: the cookie stays on its host
    server = env_of(plain, "server")
    assert (server["COVE_LOGIN"], server["COVE_SESSION_DOMAIN"]) == ("true", "")
    assert not [k for k in server if k.startswith("COVE_OIDC_")]
    assert f"{PREFIX}-oidc" not in names(plain, "Secret")
    refused = helm.template("defaults.yaml", values={"auth.oidc": {"issuer": "https://sso.example.com"}})
    assert refused.returncode != 0
    assert "auth.oidc.clientId is required with auth.oidc.issuer" in refused.stderr
