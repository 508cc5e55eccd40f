"""``cove.Client()`` in a hub notebook, with no setup: a member's JupyterLab kernel runs the example notebook
(examples/notebooks/deploy-and-chat.ipynb) cell by cell against a real `cove server` and `cove hub`. The client finds
the API in COVE_API_URL (set by the spawner) and acts as the member with the hub's token for their server
(JUPYTERHUB_API_TOKEN), which the server checks with the hub."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from studio.bootstrap import open_studio
from studio.db import Database
from studio.demo import PAIRS
from studio.errors import NotFound
from studio.services import deployments, events
from studio.settings import Settings
from studio.values import Status
from tests.integration.conftest import CoveServer, register_demo, runtime_pids, wait_until
from tests.integration.test_hub import Hub, add_pool, hub_settings, people
from tests.people import ADMIN

pytestmark = [pytest.mark.runtime, pytest.mark.hub]
NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "deploy-and-chat.ipynb"


class Kernel:
    """One kernel of a user's Jupyter server, reached through the hub's proxy (REST to start it, its websocket to run
    code), as JupyterLab reaches it. Cells run in it one after another and share their variables."""

    def __init__(self, base: str, user: str, token: str) -> None:
        self.base, self.user, self.headers = base, user, {"Authorization": f"token {token}"}
        self.session = uuid.uuid4().hex
        self.ws: ClientConnection | None = None
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> Kernel:
        answer = httpx.post(f"{self.base}/api/kernels", headers=self.headers, json={"name": "python3"}, timeout=60)
        answer.raise_for_status()
        url = self.base.replace("http://", "ws://") + f"/api/kernels/{answer.json()['id']}/channels"
        self.ws = self.stack.enter_context(
            connect(url, additional_headers=self.headers, open_timeout=30, max_size=None)
        )
        return self

    def run(self, code: str, timeout: float = 600) -> str:
        """What ``code`` printed; the test fails with the traceback if it raised."""
        assert self.ws is not None
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "username": self.user, "session": self.session, "msg_type": "execute_request"}
        header |= {"version": "5.3", "date": datetime.now(UTC).isoformat()}
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        request = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
        self.ws.send(json.dumps(request | {"buffers": []}))
        printed, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=deadline - time.monotonic()))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = message["msg_type"], message["content"]
            if kind == "stream":
                printed += body["text"]
            elif kind == "error":
                pytest.fail(
                    f"the cell raised {body['ename']}: {body['evalue']}\n{code}\n" + "\n".join(body["traceback"])
                )
            elif kind == "status" and body["execution_state"] == "idle":
                return printed
        pytest.fail(f"the cell did not finish in {timeout:.0f} s:\n{code}")

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


def code_cells(path: Path) -> list[str]:
    notebook: dict[str, Any] = json.loads(path.read_text())
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


@pytest.fixture
def cove(tmp_path: Path, demo_folder: Path) -> Iterator[tuple[Settings, Hub]]:
    """`cove server` (API, gateway, controller) and `cove hub` over one home, the demo model in the catalog, a pool
    for notebooks, and a member, ana."""
    settings = hub_settings(tmp_path / "cove")
    db = open_studio(settings)
    try:
        register_demo(db, settings, demo_folder)
    finally:
        db.dispose()
    add_pool(settings, "lab", cpu=1)
    people(settings, "ana")
    server = CoveServer(settings, tmp_path / "server.log").start()
    try:
        with Hub(settings, tmp_path / "hub.log") as hub:
            yield settings, hub
    finally:
        server.stop()
        assert not runtime_pids(settings.home), "the notebook's deployment left model servers running"


def test_a_notebook_deploys_and_chats_as_its_user_with_no_setup(cove: tuple[Settings, Hub]) -> None:
    settings, hub = cove
    assert hub.spawn("ana", "lab-cpu-1").status_code in (201, 202)
    hub.wait_ready("ana")
    cells = code_cells(NOTEBOOK)
    assert len(cells) == 4, "the test follows the notebook's steps: connect, deploy, chat, clean up"
    connect_cell, deploy_cell, chat_cell, cleanup_cell = cells
    db = open_studio(settings)
    try:
        with Kernel(f"{settings.hub_url}/user/ana", "ana", hub.user_token("ana")) as kernel:
            # nothing set up in the notebook: the spawner's environment and the hub's token for ana are enough
            assert kernel.run(connect_cell) == "acting as ana\n"

            kernel.run(deploy_cell)
            name = kernel.run("print(name)").strip()
            deployed = deployments.get_deployment(actor=ADMIN, db=db, name=name)
            assert (deployed.owner, deployed.model, deployed.status) == ("ana", "demo-chat", Status.READY)
            audit = events.audit_trail(db=db, actor=ADMIN)
            assert {e.actor for e in audit if e.kind == "deployment" and e.name == name} == {"ana"}

            assert kernel.run(chat_cell) == dict(PAIRS)["Hello"] + "\n"  # the demo's trained answer, greedy

            assert kernel.run(cleanup_cell) == f"deleted {name}\n"
            wait_until(lambda: not gone_or_going(db, name), timeout=60, what=f"deployment {name} to go")
    finally:
        db.dispose()


def gone_or_going(db: Database, name: str) -> bool:
    """False once ``name`` is deleted (the controller removes the row after its replicas stopped)."""
    try:
        deployments.get_deployment(actor=ADMIN, db=db, name=name)
    except NotFound:
        return False
    return True
