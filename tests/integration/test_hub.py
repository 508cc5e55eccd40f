"""Notebooks for real: `cove hub` runs JupyterHub with the Python proxy; servers are real JupyterLab processes spawned
through the REST API, reached through the proxy, and their kernels execute code. Admission uses the studio's pools;
the idle culler (a hub service) stops idle and over-age servers and gives their capacity back. People log in to the
hub as their Cove selves (Cove's session cookie or password), and only Cove's users start servers; embedded, only
the first admin does unless the hub is told to trust every user (``TRUST_ALL``)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from itsdangerous import TimestampSigner
from starlette.testclient import TestClient
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from studio import sessions
from studio.bootstrap import open_studio
from studio.login import Login
from studio.models import Pool
from studio.services import notebooks, users
from studio.settings import Settings
from studio.values import Principal, Purpose
from tests.conftest import make_settings
from tests.integration.conftest import cove_env, wait_until
from tests.people import ADMIN, member

pytestmark = [pytest.mark.runtime, pytest.mark.hub]
# Servers of several people on this machine, for the tests of pools and culling; by default only the first admin
# may start one here (test_embedded_notebooks_are_the_first_admins_alone).
TRUST_ALL = "c.LocalPoolSpawner.trust_all_users = True\n"


class Hub:
    """`cove hub` as a child process, and a client of its REST API with the studio's service token. ``config``: a
    JupyterHub config file's text, loaded last (COVE_HUB_EXTRA_CONFIG)."""

    def __init__(self, settings: Settings, log: Path, config: str = TRUST_ALL) -> None:
        self.settings, self.log_path, self.config = settings, log, config
        self.proc: subprocess.Popen[bytes] | None = None
        self.api: httpx.Client | None = None

    def __enter__(self) -> Hub:
        s = self.settings
        env = cove_env(s) | {
            "COVE_HUB_IDLE_TIMEOUT_S": str(s.hub_idle_timeout_s),
            "COVE_HUB_MAX_AGE_S": str(s.hub_max_age_s),
            "COVE_HUB_CULL_EVERY_S": str(s.hub_cull_every_s),
            "COVE_HUB_ACTIVITY_INTERVAL_S": str(s.hub_activity_interval_s),
        }
        if self.config:
            extra = self.log_path.with_name(self.log_path.stem + "_config.py")
            extra.write_text(self.config)
            env["COVE_HUB_EXTRA_CONFIG"] = str(extra)
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


def people(settings: Settings, *who: str | tuple[str, ...]) -> list[Principal]:
    """Cove members: a name, or (name, group, …)."""
    db = open_studio(settings)
    try:
        return [member(db, *((w,) if isinstance(w, str) else w)) for w in who]
    finally:
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
    people(settings, "alice")
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
    people(settings, "alice", "bob")
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


def test_profiles_follow_the_users_cove_groups(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "cove")
    add_pool(settings, "team", cpu=2, groups=["ml"])
    people(settings, ("ada", "ml"), "bob")
    with Hub(settings, tmp_path / "hub.log") as hub:
        assert hub.spawn("ada", "team-cpu-1").status_code in (201, 202)  # in Cove's group ml
        refused = hub.spawn("bob", "team-cpu-1")
        assert refused.status_code == 400
        assert "unknown profile 'team-cpu-1'" in refused.json()["message"]
        assert "team-" not in refused.json()["message"].split("you may start:")[1]
        assert hub.api is not None
        hub.api.post("/groups/ml")
        hub.api.post("/groups/ml/users", json={"users": ["bob"]})
        assert hub.spawn("bob", "team-cpu-1").status_code == 400  # a hub group is not a Cove group

        db = open_studio(settings)
        users.update_user(db=db, actor=ADMIN, name="bob", groups=["ml"])
        db.dispose()
        assert hub.spawn("bob", "team-cpu-1").status_code in (201, 202)  # read from Cove at the spawn
        hub.wait_ready("bob")
        hub.wait_ready("ada")
        assert claims(settings) == {"ada": "team", "bob": "team"}


def test_the_culler_stops_an_idle_server_and_leaves_a_busy_one(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "cove", hub_idle_timeout_s=10)
    add_pool(settings, "lab", cpu=4)
    people(settings, "idle", "busy")
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
    people(settings, "alice")
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
    people(settings, "carol")
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


# --------------------------------------------------------------------------------------------- who logs in


def test_embedded_notebooks_are_the_first_admins_alone(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "cove")
    add_pool(settings, "lab", cpu=2)
    people(settings, "ada")
    with Hub(settings, tmp_path / "hub.log", config="") as hub:
        refused = hub.spawn("ada", "lab-cpu-1")
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"] == (
            f"embedded notebooks run as Cove's OS user ({pwd.getpwuid(os.geteuid()).pw_name}) and could read its "
            "database; on one machine only admin may start one; use Kubernetes for a team "
            "(COVE_HUB_SPAWNER=kubernetes: each server a pod with only its own home volume)"
        )
        stranger = hub.spawn("mallory", "lab-cpu-1")  # a name the hub's API takes, but no Cove user
        assert stranger.status_code == 403
        assert "only Cove's users start notebook servers: no user named 'mallory'" in stranger.json()["message"]
        assert claims(settings) == {}  # the refusals took nothing

        assert hub.spawn("admin", "lab-cpu-1").status_code in (201, 202)
        hub.wait_ready("admin")
        assert claims(settings) == {"admin": "lab"}

        with httpx.Client(base_url=settings.hub_url, follow_redirects=False, timeout=30) as web:
            assert web.get("/hub/login").status_code == 302  # login off: every visitor is the first admin
            me = web.get("/hub/api/user").json()
            assert (me["name"], me["admin"]) == ("admin", True)


@pytest.fixture(scope="module")
def login_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Hub]]:
    """One hub with login on, for the login tests (each with people of its own). Its logins are checked against
    Cove every second, so a removal shows at once."""
    home = tmp_path_factory.mktemp("login")
    settings = hub_settings(home / "cove", login=True)
    with Hub(settings, home / "hub.log", config="c.CoveAuthenticator.auth_refresh_age = 1\n") as hub:
        yield settings, hub


@pytest.fixture
def browser(login_hub: tuple[Settings, Hub]) -> Iterator[Callable[..., httpx.Client]]:
    """Clients of the hub as browsers are: cookies kept, redirects not followed (they are what is tested); given a
    ``session``, with Cove's session cookie. Closed after the test."""
    settings, _ = login_hub
    made: list[httpx.Client] = []

    def make(session: str = "") -> httpx.Client:
        web = httpx.Client(base_url=settings.hub_url, follow_redirects=False, timeout=30)
        if session:
            web.cookies.set(sessions.COOKIE, session)
        made.append(web)
        return web

    yield make
    for web in made:
        web.close()


def logged_in_as(web: httpx.Client) -> dict[str, Any] | None:
    """The hub's model of who the client's hub cookie logs in (GET /hub/api/user), or None when nobody."""
    answer = web.get("/hub/api/user")
    return dict(answer.json()) if answer.status_code == 200 else None


def test_a_cove_login_brings_a_person_into_the_hub_as_themself(
    login_hub: tuple[Settings, Hub], browser: Callable[..., httpx.Client]
) -> None:
    settings, hub = login_hub
    db = open_studio(settings)
    member(db, "ana", "nlp", "vision", password="correct horse")
    web = browser()

    to_cove = web.get("/hub/login", params={"next": "/hub/home"})
    assert to_cove.status_code == 302
    where = urlsplit(to_cove.headers["location"])
    assert f"{where.scheme}://{where.netloc}{where.path}" == f"{settings.gateway_url}/auth/login"
    back = parse_qs(where.query)["next"][0]
    assert back == f"{settings.hub_url}/hub/login?from_cove=1&next=%2Fhub%2Fhome"

    # Cove's login (the server's /auth app, here in the test) takes her password and sends her back to the hub
    with TestClient(Login(settings=settings, db=db).app, base_url=settings.gateway_url, follow_redirects=False) as cove:
        done = cove.post("/auth/login", data={"name": "ana", "password": "correct horse", "next": back})
        assert (done.status_code, done.headers["location"]) == (303, back)
        web.cookies.set(sessions.COOKIE, cove.cookies[sessions.COOKIE])
    landed = web.get(back)
    assert (landed.status_code, landed.headers["location"]) == (302, "/hub/home")

    me = logged_in_as(web)
    assert me is not None
    assert (me["name"], me["admin"], sorted(me["groups"])) == ("ana", False, ["nlp", "vision"])
    assert hub.api is not None
    seen = hub.api.get("/users/ana").json()
    assert (seen["admin"], sorted(seen["groups"])) == (False, ["nlp", "vision"])

    boss = browser(sessions.issue(settings, "admin"))
    assert boss.get("/hub/login").status_code == 302
    assert (logged_in_as(boss) or {}).get("admin") is True  # Cove's admin is the hub's
    db.dispose()


def test_a_forged_altered_or_expired_session_is_no_login(
    login_hub: tuple[Settings, Hub], browser: Callable[..., httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = login_hub
    forged = sessions.issue(make_settings(settings.home.parent / "elsewhere", secret_key="another key"), "admin")
    altered = sessions.issue(settings, "admin")[:-2] + "xx"
    lifetime = settings.session_hours * 3600
    with monkeypatch.context() as past:  # signed a minute more than a session's lifetime ago
        past.setattr(TimestampSigner, "get_timestamp", lambda _self: int(time.time() - lifetime - 60))
        expired = sessions.issue(settings, "admin")

    for token in (forged, altered, expired):
        web = browser(token)
        refused = web.get("/hub/login")
        assert refused.status_code == 302
        assert refused.headers["location"].startswith(f"{settings.gateway_url}/auth/login?next=")
        assert logged_in_as(web) is None
    valid = browser(sessions.issue(settings, "admin"))
    valid.get("/hub/login")
    assert (logged_in_as(valid) or {}).get("name") == "admin"


def test_a_removed_or_disabled_user_is_refused_and_their_hub_login_ends(
    login_hub: tuple[Settings, Hub], browser: Callable[..., httpx.Client]
) -> None:
    settings, hub = login_hub
    db = open_studio(settings)
    member(db, "bo")
    member(db, "cy")
    webs = {name: browser(sessions.issue(settings, name)) for name in ("bo", "cy")}
    for name, web in webs.items():
        web.get("/hub/login")
        assert (logged_in_as(web) or {}).get("name") == name

    users.remove_user(db=db, actor=ADMIN, name="bo")
    users.update_user(db=db, actor=ADMIN, name="cy", disabled=True)

    for name, web in webs.items():
        wait_until(lambda web=web: logged_in_as(web) is None, timeout=15, what=f"{name}'s hub login to end")
        again = web.get("/hub/login")  # the Cove session no longer counts either
        assert again.headers["location"].startswith(f"{settings.gateway_url}/auth/login?next=")
        assert logged_in_as(web) is None
    refused = hub.spawn("cy", "lab-cpu-1")  # nor may anyone start a server for them
    assert refused.status_code == 403
    assert "only Cove's users start notebook servers: user 'cy' is disabled" in refused.json()["message"]
    db.dispose()


def test_the_hub_checks_a_posted_password_against_coves(
    login_hub: tuple[Settings, Hub], browser: Callable[..., httpx.Client]
) -> None:
    settings, _ = login_hub
    db = open_studio(settings)
    users.set_password(db=db, actor=ADMIN, name="admin", password="the admin's own")
    db.dispose()
    web = browser()
    web.get("/hub/login")  # sets the _xsrf cookie a form post must echo, as the hub's login page does
    xsrf = web.cookies["_xsrf"]

    wrong = web.post("/hub/login", data={"username": "admin", "password": "admin", "_xsrf": xsrf})
    assert wrong.status_code == 403
    assert "Invalid username or password" in wrong.text
    assert logged_in_as(web) is None

    right = web.post("/hub/login", data={"username": "admin", "password": "the admin's own", "_xsrf": xsrf})
    assert right.status_code == 302
    assert (logged_in_as(web) or {}).get("admin") is True

    out = web.get("/hub/logout")  # out of the hub, then on to Cove's logout
    assert (out.status_code, out.headers["location"]) == (302, f"{settings.gateway_url}/auth/logout")
    assert logged_in_as(web) is None
