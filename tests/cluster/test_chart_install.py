"""Opt-in: install the Helm chart on a real cluster, check that Cove comes up there, then deploy the demo model
(the CPU runtime of the same image) and chat with it through the gateway.

Skipped unless ``COVE_TEST_KUBECONFIG`` names a kubeconfig (and ``COVE_TEST_IMAGE`` an image of Cove the cluster
can pull, ``repository:tag``). Run with ``.venv/bin/python -m pytest tests/cluster``. It installs into a namespace of
its own, with a CPU pool ``cpu`` of 4 cores, and removes it afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

KUBECONFIG = os.environ.get("COVE_TEST_KUBECONFIG", "")
IMAGE = os.environ.get("COVE_TEST_IMAGE", "")
ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".venv" / "bin" / "helm"

pytestmark = pytest.mark.skipif(
    not (KUBECONFIG and IMAGE), reason="a real cluster: set COVE_TEST_KUBECONFIG and COVE_TEST_IMAGE"
)


@pytest.fixture(scope="module")
def release() -> Iterator[str]:
    namespace = f"cove-test-{uuid.uuid4().hex[:6]}"
    repository, tag = IMAGE.rsplit(":", 1)
    env = os.environ | {"KUBECONFIG": KUBECONFIG}
    install = [str(HELM), "install", "cove", str(ROOT / "helm" / "cove"), "--namespace", namespace]
    install += ["--create-namespace", "--wait", "--timeout", "10m"]
    install += ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
    install += ["--set-json", 'pools=[{"name": "cpu", "purpose": "serve", "cpuCores": 4, "memoryMib": 8192}]']
    # the chart generates no secrets: inline throwaway ones (an operator names Secrets of their own instead)
    made = {k: secrets.token_hex(24) for k in ("secretKey", "hub.apiToken", "postgresql.auth.password")}
    made["postgresql.auth.postgresPassword"] = secrets.token_hex(24)
    install += [arg for key, value in made.items() for arg in ("--set", f"{key}={value}")]
    subprocess.run(install, env=env, check=True)
    try:
        yield namespace
    finally:
        subprocess.run([str(HELM), "uninstall", "cove", "--namespace", namespace, "--wait"], env=env, check=False)
        subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], env=env, check=False)


def test_every_component_becomes_available_and_the_gateway_answers(release: str) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=KUBECONFIG)
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + 300
    while True:
        deployments = apps.list_namespaced_deployment(release).items
        waiting = [d.metadata.name for d in deployments if (d.status.available_replicas or 0) < (d.spec.replicas or 1)]
        if deployments and not waiting:
            break
        assert time.monotonic() < deadline, f"not available after 5 min: {waiting}"
        time.sleep(5)
    core = client.CoreV1Api(api)
    services = [s.metadata.name for s in core.list_namespaced_service(release).items]
    server = next(name for name in services if name.endswith("-server"))
    # From the playground's pod through the server's Service, as the playground calls the gateway: the gateway's
    # NetworkPolicy admits the playground, and not the API server's service proxy (it comes from a control-plane
    # node, which that policy does not name).
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://{server}:8080/healthz', timeout=10).read())"
    health = in_pod(release, "playground", "python", "-c", fetch)
    assert "ok" in health.lower()


def in_pod(namespace: str, component: str, *command: str) -> str:
    """Run ``command`` in the pod of one of the chart's components; returns what it printed."""
    from kubernetes import client, config
    from kubernetes.stream import stream

    core = client.CoreV1Api(config.new_client_from_config(config_file=KUBECONFIG))
    pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/component={component}").items
    assert pods, f"no {component} pod"
    name = pods[0].metadata.name if pods[0].metadata else ""
    return str(
        stream(core.connect_get_namespaced_pod_exec, name, namespace, command=list(command),
               stderr=True, stdin=False, stdout=True, tty=False)
    )  # fmt: skip


def in_server(namespace: str, *command: str) -> str:
    """Run ``command`` in the server's pod (its settings, database and model cache); returns what it printed."""
    return in_pod(namespace, "server", *command)


ASK = """
import json, sys, urllib.request
body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
request = urllib.request.Request(
    "http://127.0.0.1:8080/v1/chat/completions", data=json.dumps(body).encode(),
    headers={"Authorization": "Bearer " + sys.argv[1], "Content-Type": "application/json"},
)
print(json.load(urllib.request.urlopen(request, timeout=120))["choices"][0]["message"]["content"])
"""


def test_the_demo_model_deploys_and_answers_through_the_gateway(release: str) -> None:
    repository, tag = IMAGE.rsplit(":", 1)
    demo = "/var/lib/cove/models/demo"  # in the model cache claim, which model servers mount read-only
    assert "demo model written to" in in_server(release, "cove", "demo-model", demo)
    in_server(release, "cove", "model", "add", "demo", demo)
    in_server(release, "cove", "image", "add", "cove-cpu", tag, repository, "--runtime", "transformers")
    created = in_server(
        release, "cove", "deploy", "create", "demo", "--model", "demo", "--image", f"cove-cpu:{tag}", "--pool", "cpu",
        "--cpu", "1", "--memory-mib", "2048", "--wait", "--timeout", "600", "--", "--dtype", "float32",
    )  # fmt: skip
    assert "error" not in created.lower(), created
    assert json.loads(in_server(release, "cove", "deploy", "get", "demo", "--json"))["status"] == "Ready"
    key = json.loads(in_server(release, "cove", "key", "create", "smoke", "--json"))["key"]
    assert in_server(release, "python", "-c", ASK, key).strip(), "the demo model answered nothing"
