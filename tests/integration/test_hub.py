"""Notebooks for real: `cove hub` runs JupyterHub with the Python proxy; servers are real JupyterLab processes spawned
through the REST API, reached through the proxy, and their kernels execute code. Admission uses the studio's pools;
the idle culler (a hub service) stops idle and over-age servers and gives their capacity back."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from studio.bootstrap import open_studio
from studio.models import Pool
from studio.services import notebooks
from studio.settings import Settings
from studio.values import Purpose
from tests.conftest import make_settings
from tests.integration.conftest import cove_env, wait_until
from tests.people import ADMIN

pytestmark = [pytest.mark.runtime, pytest.mark.hub]


class Hub:
    """`cove hub` as a child process, and a client of its REST API with the studio's service token."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log_path = settings, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.api: httpx.Client | None = None

    def __enter__(self) -> Hub:
        s = self.settings
        env = cove_env(s) | {
            "COVE_HUB_IDLE_TIMEOUT_S": str(s.hub_idle_timeout_s),
            "COVE_HUB_MAX_AGE_S": str(s.hub_max_age_s),
            "COVE_HUB_CULL_EVERY_S": str(s.hub_cull_every_s),
            "COVE_HUB_ACTIVITY_INTERVAL_S": str(s.hub_activity_interval_s),
            "COVE_HUB_GROUPS": json.dumps(s.hub_groups),
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "studio.cli", "hub"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._up, timeout=60, what="the hub to answer /hub/health")
        token = (s.hub_dir / "api_token").read_text().strip()
        self.api = httpx.Client(
            base_url=f"{s.hub_url}/hub/api", headers={"Authorization": f"token {token}"}, timeout=30
        )
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log()
        try:
            return httpx.get(f"{self.settings.hub_url}/hub/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        if self.api is not None:
            for user in self.api.get("/users").json():
                if user["servers"]:
                    self.api.delete(f"/users/{user['name']}/server")
            self.api.close()
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # ---------------------------------------------------------------------------------------------- helpers

    def spawn(self, user: str, profile: str) -> httpx.Response:
        assert self.api is not None
        self.api.post(f"/users/{user}")
        return self.api.post(f"/users/{user}/server", json={"profile": profile})

    def server(self, user: str) -> dict[str, Any]:
        assert self.api is not None
        return dict(self.api.get(f"/users/{user}").json()["servers"].get("", {}))

    def wait_ready(self, user: str) -> None:
        wait_until(lambda: self.server(user).get("ready"), timeout=120, what=f"{user}'s server to be ready")

    def user_token(self, user: str) -> str:
        assert self.api is not None
        return str(self.api.post(f"/users/{user}/tokens", json={"note": "test"}).json()["token"])


def hub_settings(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "hub_cull_every_s": 1,
        "hub_activity_interval_s": 1,
    }
    return make_settings(home, **(values | overrides))


def add_pool(settings: Settings, name: str, cpu: float, groups: list[str] | None = None) -> None:
    db = open_studio(settings)
    with db.session() as session:
        session.add(Pool(name=name, purpose=Purpose.DEV.value, cpu_cores=cpu, memory_mib=16384, groups=groups or []))
        session.commit()
    db.dispose()


def claims(settings: Settings) -> dict[str, str]:
    db = open_studio(settings)
    try:
        return {n.name: n.pool for n in notebooks.list_notebooks(actor=ADMIN, db=db)}
    finally:
        db.dispose()


def execute(settings: Settings, user: str, token: str, code: str) -> str:
    """Run ``code`` in a new kernel of ``user``'s server (through the proxy) and return what it printed."""
    base = f"{settings.hub_url}/user/{user}"
    headers = {"Authorization": f"token {token}"}
    kernel = httpx.post(f"{base}/api/kernels", headers=headers, json={"name": "python3"}, timeout=60).json()
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "username": user,
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": datetime.now(UTC).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}},
        "channel": "shell",
        "buffers": [],
    }
    ws_url = base.replace("http://", "ws://") + f"/api/kernels/{kernel['id']}/channels"
    printed = ""
    with connect(ws_url, additional_headers=headers, open_timeout=30) as ws:
        ws.send(json.dumps(request))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=60))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                printed += message["content"]["text"]
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return printed
    pytest.fail("the kernel did not finish")


# ------------------------------------------------------------------------------------------------------ tests


def test_a_user_gets_jupyterlab_whose_kernel_runs_code_and_the_pool_claim_follows(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "cove")
    add_pool(settings, "lab", cpu=2)
    with Hub(settings, tmp_path / "hub.log") as hub:
        assert hub.spawn("alice", "lab-cpu-1").status_code in (201, 202)
        hub.wait_ready("alice")
        assert claims(settings) == {"alice": "lab"}

        token = hub.user_token("alice")
        status = httpx.get(f"{settings.hub_url}/user/alice/api/status", headers={"Authorization": f"token {token}"})
        assert status.status_code == 200  # JupyterLab's server, through the proxy
        lab = httpx.get(f"{settings.hub_url}/user/alice/lab", headers={"Authorization": f"token {token}"})
        assert lab.status_code == 200
        assert "JupyterLab" in lab.text
        assert execute(settings, "alice", token, "import os; print(6 * 7, os.environ['COVE_POOL'])") == "42 lab\n"

        assert hub.api is not None
        assert hub.api.delete("/users/alice/server").status_code in (202, 204)
        wait_until(lambda: not hub.server("alice"), timeout=60, what="alice's server to stop")
        assert claims(settings) == {}


def test_a_full_pool_refuses_with_what_is_free_and_when_to_retry(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "cove", hub_idle_timeout_s=600)
    add_pool(settings, "lab", cpu=2)
    with Hub(settings, tmp_path / "hub.log") as hub:
        assert hub.spawn("alice", "lab-cpu-2").status_code in (201, 202)
        hub.wait_ready("alice")

        refused = hub.spawn("bob", "lab-cpu-1")

        assert refused.status_code == 409, refused.text
        message = refused.json()["message"]
        assert "no room for this notebook" in message
        assert "held by notebook alice" in message
        assert "free in pool 'lab': 0 CPU cores" in message
        assert "retry when a server stops; idle servers are stopped after 600 s" in message
        assert claims(settings) == {"alice": "lab"}  # the refusal took nothing


def test_profiles_follow_the_users_groups(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "cove", hub_groups={"ml": ["ada"]})
    add_pool(settings, "team", cpu=2, groups=["ml"])
    with Hub(settings, tmp_path / "hub.log") as hub:
        assert hub.spawn("ada", "team-cpu-1").status_code in (201, 202)  # a member from COVE_HUB_GROUPS
        refused = hub.spawn("bob", "team-cpu-1")
        assert refused.status_code == 400
        assert "unknown profile 'team-cpu-1'" in refused.json()["message"]
        assert "team-" not in refused.json()["message"].split("you may start:")[1]

        assert hub.api is not None
        hub.api.post("/groups/ml")
        hub.api.post("/groups/ml/users", json={"users": ["bob"]})
        assert hub.spawn("bob", "team-cpu-1").status_code in (201, 202)
        hub.wait_ready("bob")
        hub.wait_ready("ada")
        assert claims(settings) == {"ada": "team", "bob": "team"}


def test_the_culler_stops_an_idle_server_and_leaves_a_busy_one(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "cove", hub_idle_timeout_s=10)
    add_pool(settings, "lab", cpu=4)
    with Hub(settings, tmp_path / "hub.log") as hub:
        hub.spawn("idle", "lab-cpu-1")
        hub.wait_ready("idle")
        started = time.monotonic()  # the idle server's last activity is about now
        hub.spawn("busy", "lab-cpu-1")
        hub.wait_ready("busy")
        token = hub.user_token("busy")

        # busy: a kernel that keeps working past the idle timeout
        while time.monotonic() - started < 30:
            assert execute(settings, "busy", token, "print('working')") == "working\n"
            if not hub.server("idle"):
                break
        culled_after = time.monotonic() - started

        assert not hub.server("idle"), "the idle server was not culled"
        assert 9 <= culled_after <= 25  # the timeout (10 s), plus a cull pass and an activity report
        assert hub.server("busy").get("ready")
        assert claims(settings) == {"busy": "lab"}


def test_max_age_reclaims_even_a_busy_server(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "cove", hub_idle_timeout_s=600, hub_max_age_s=12)
    add_pool(settings, "lab", cpu=2)
    with Hub(settings, tmp_path / "hub.log") as hub:
        hub.spawn("alice", "lab-cpu-1")
        hub.wait_ready("alice")
        token = hub.user_token("alice")
        started = time.monotonic()
        while hub.server("alice") and time.monotonic() - started < 40:
            with contextlib.suppress(httpx.HTTPError, WebSocketException, OSError, KeyError, ValueError):
                execute(settings, "alice", token, "print(1)")  # busy until the server is taken away
        assert not hub.server("alice"), "the server outlived its maximum age"
        assert claims(settings) == {}


def test_the_studio_notebooks_page_starts_and_stops_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from studio.ui import facade

    settings = hub_settings(tmp_path / "cove")
    add_pool(settings, "lab", cpu=2)
    for name, value in cove_env(settings).items():
        if name.startswith("COVE_"):
            monkeypatch.setenv(name, value)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "studio/ui/app.py"), default_timeout=30)
    try:
        at.switch_page("app_pages/notebooks.py").run()
        assert "does not answer" in "\n".join(e.value for e in at.error)  # no hub yet: said plainly

        with Hub(settings, tmp_path / "hub.log") as hub:
            at.run()
            assert not at.error
            at.text_input(key="notebook-user").input("carol")
            at.selectbox(key="notebook-profile").set_value("lab-cpu-1")
            at.button[0].click().run()
            assert "Starting carol's server (lab-cpu-1)" in "\n".join(s.value for s in at.success)
            hub.wait_ready("carol")
            at.run()
            row = at.dataframe[0].value.to_dict("records")[0]
            assert (row["user"], row["state"], row["pool"], row["profile"]) == ("carol", "ready", "lab", "lab-cpu-1")

            at.selectbox(key="notebook-stop-user").set_value("carol")
            at.button(key="notebook-stop").click().run()
            wait_until(lambda: not hub.server("carol"), timeout=60, what="carol's server to stop")
            assert claims(settings) == {}
    finally:
        facade._shared().db.dispose()
        facade._open.clear()
