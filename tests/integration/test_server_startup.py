"""``cove server`` started before its database: it answers liveness at once, says in readiness that it is starting
and why, refuses requests with 503 and ``Retry-After``, and serves (the API, the gateway, the controller) once the
database answers, without a restart."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from studio.db import Database, make_engine
from studio.models import ApiKeyCreate
from studio.services import keys
from tests.conftest import make_settings, new_postgres_database
from tests.fakes.severable_link import SeverableLink
from tests.integration.conftest import cove_env, wait_until
from tests.people import ADMIN

pytestmark = [pytest.mark.runtime, pytest.mark.postgres]


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


def test_cove_server_started_before_its_database_serves_once_the_database_answers(
    postgres: str, tmp_path: Path
) -> None:
    url = new_postgres_database(postgres)  # empty: the server migrates it once it answers
    host, port = url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
    link = SeverableLink((host, int(port)))
    link.sever()  # nothing listens on the link's port yet: the database "does not answer"
    through_link = url.replace(f"{host}:{port}", f"127.0.0.1:{link.port}")
    settings = make_settings(tmp_path / "home", database_url=through_link)
    base = settings.gateway_url
    env = cove_env(settings) | {"COVE_DB_CONNECT_TIMEOUT_S": "1", "COVE_LEADER_RETRY_S": "0.5"}
    log = tmp_path / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "server"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        live = wait_until(
            lambda: _get(base + "/livez") or proc.poll() is not None, timeout=60, what="cove server to answer /livez"
        )
        assert proc.poll() is None, log.read_text()
        assert live.status_code == 200

        ready = httpx.get(base + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "starting"
        assert "the database does not answer" in ready.json()["problem"]
        wait_until(lambda: "attempt 2" in httpx.get(base + "/readyz").json()["problem"], timeout=30, what="a retry")
        for refused in (
            httpx.get(base + "/api/v1/deployments"),
            httpx.post(base + "/v1/chat/completions", json={"model": "chat", "messages": []}),
        ):
            assert refused.status_code == 503
            assert refused.headers["retry-after"]
        assert "has not reached its database yet" in httpx.get(base + "/api/v1/deployments").json()["error"]["message"]
        assert proc.poll() is None  # still running: no crash loop

        link.restore()  # the database comes up
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200, timeout=60, what="the server to be ready")
        assert httpx.get(base + "/readyz").json()["status"] == "ok"
        wait_until(
            lambda: httpx.get(base + "/healthz").json().get("controller", {}).get("role") == "leader",
            timeout=30,
            what="the controller to lead",
        )
        db = Database(make_engine(url))
        try:  # migrated by the server: a token made now works through its API
            token = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="ci", scopes=["*"])).key
        finally:
            db.dispose()
        listed = httpx.get(base + "/api/v1/deployments", headers={"authorization": f"Bearer {token}"})
        assert listed.status_code == 200, listed.text
        assert httpx.post(base + "/v1/chat/completions", json={"model": "chat", "messages": []}).status_code == 401
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        link.sever()
    assert proc.returncode == 0, log.read_text()
