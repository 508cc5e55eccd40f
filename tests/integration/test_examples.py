"""The examples in examples/ do what they say, against a real `cove server`: the CI recipe's rollout applies
examples/specs/ (the demo model's recommended CPU deployment), waits for Ready, chats, and succeeds; a rollout whose
deployment fails is rolled back; the pipelines run that script. (The notebook example is run inside a real hub
notebook by test_notebook_client.py.)"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from studio.db import Database
from studio.demo import PAIRS
from studio.errors import NotFound
from studio.models import ApiKeyCreate, ModelCreate
from studio.services import deployments, keys, models
from studio.settings import Settings
from studio.values import Status
from tests.conftest import make_settings
from tests.integration.conftest import (
    CoveServer,
    add_fake_image,
    cove_env,
    register_demo,
    wait_until,
    write_stub_model,
)
from tests.people import ADMIN

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
SCOPES = ["models:write", "deployments:write", "keys:write"]


def rollout(settings: Settings, db: Database, specs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """examples/ci/rollout.py as a pipeline runs it: COVE_API_URL and a token with the scopes its comments name,
    from a machine with no Cove of its own."""
    token = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name=f"ci-{secrets.token_hex(4)}", scopes=SCOPES)).key
    runner = make_settings(settings.home.parent / "runner")
    env = cove_env(runner) | {"COVE_API_URL": settings.gateway_url, "COVE_TOKEN": token}
    return subprocess.run(
        [sys.executable, str(CI / "rollout.py"), str(specs), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.runtime
def test_the_ci_rollout_brings_up_the_example_specs_and_chats(
    settings: Settings, db: Database, demo_folder: Path, tmp_path: Path
) -> None:
    register_demo(db, settings, demo_folder)
    server = CoveServer(settings, tmp_path / "server.log").start()
    try:
        done = rollout(settings, db, ROOT / "examples" / "specs", "--expect", dict(PAIRS)["Hello"])
        assert done.returncode == 0, done.stdout + done.stderr + server.log()
        assert "Deployment chat: created" in done.stdout
        assert "chat: Ready, 1/1 replicas" in done.stdout
        assert f"chat answered: {dict(PAIRS)['Hello']!r}" in done.stdout
        assert done.stdout.rstrip().endswith("rollout done")
        assert deployments.get_deployment(db=db, actor=ADMIN, name="chat").status is Status.READY
        # The smoke test's key was for the chat alone, and is revoked.
        [smoke] = [k for k in keys.list_keys(db=db, actor=ADMIN) if k.name.startswith("rollout-chat-")]
        assert smoke.deployments == ["chat"]
        assert smoke.revoked_at is not None

        again = rollout(settings, db, ROOT / "examples" / "specs")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Deployment chat: unchanged" in again.stdout
    finally:
        server.stop()


@pytest.mark.runtime
def test_a_rollout_whose_deployment_fails_is_rolled_back(settings: Settings, db: Database, tmp_path: Path) -> None:
    models.add_model(
        db=db,
        actor=ADMIN,
        data=ModelCreate(name="stub", source=str(write_stub_model(tmp_path / "stub"))),
        cache_dir=settings.models_dir,
    )
    image = add_fake_image(db, "crashing_runtime.py")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "broken.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "cove/v1",
                "kind": "Deployment",
                "metadata": {"name": "broken"},
                "spec": {"model": "stub", "image": image, "replicas": 1, "resources": {"cpu": 0.5, "memory_mib": 256}},
            }
        )
    )
    server = CoveServer(settings, tmp_path / "server.log").start()
    try:
        done = rollout(settings, db, specs, "--timeout", "120")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Deployment broken: created" in done.stdout
        assert "rollout failed: deployment 'broken' failed" in done.stderr
        assert "rollback: Deployment broken deleted" in done.stdout

        def gone() -> bool:
            try:
                return deployments.get_deployment(db=db, actor=ADMIN, name="broken").status is Status.DELETING
            except NotFound:
                return True

        wait_until(gone, timeout=60, what="the failed deployment to be rolled back")
    finally:
        server.stop()


def test_the_pipelines_run_the_rollout_with_the_cove_client() -> None:
    for name, steps in [
        ("github-actions.yml", lambda doc: doc["jobs"]["rollout"]["steps"]),
        ("gitlab-ci.yml", lambda doc: [{"run": line} for job in ("plan", "rollout") for line in doc[job]["script"]]),
    ]:
        doc = yaml.safe_load((CI / name).read_text())
        commands = " ".join(str(step.get("run", "")) for step in steps(doc))
        assert "cove diff -f specs/" in commands, name
        assert "python ci/rollout.py specs/" in commands, name
        env = doc["jobs"]["rollout"]["env"] if name == "github-actions.yml" else {}
        assert name != "github-actions.yml" or set(env) == {"COVE_API_URL", "COVE_TOKEN"}
