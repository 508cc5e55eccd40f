"""Opt-in: install the Helm chart on a real cluster and check that Cove comes up there.

Skipped unless ``COVE_TEST_KUBECONFIG`` names a kubeconfig (and ``COVE_TEST_IMAGE`` an image of Cove the cluster
can pull, ``repository:tag``). Run with ``.venv/bin/python -m pytest tests/cluster``. It installs into a namespace of
its own and removes it afterwards.
"""

from __future__ import annotations

import os
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
    health = core.connect_get_namespaced_service_proxy_with_path(f"{server}:8080", release, "healthz")
    assert "ok" in str(health).lower()
