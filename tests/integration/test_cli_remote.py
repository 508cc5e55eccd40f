"""The CLI against a Cove elsewhere: `cove login URL` (a password exchanged for a token, or a token), then every
command over the API as the token's owner, `cove whoami`, and `cove logout` revoking the token. Also the login route
itself, the saved credentials, and a URL that answers but is not a Cove."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from cove import login
from cove.client import Client
from studio.api.app import build_api
from studio.cli import cli
from studio.db import Database, utcnow
from studio.errors import Unauthorized
from studio.models import ApiKeyCreate, ApiKeyCreated
from studio.services import keys
from studio.settings import Settings
from tests.conftest import make_settings
from tests.integration.conftest import CoveServer, add_fake_image, cove_env, deploy, write_stub_model
from tests.people import ADMIN, member

PASSWORD = "ana's long password"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The remote Cove's settings: people log in."""
    return make_settings(tmp_path / "server", login=True)


def cove(laptop: Settings, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """`cove ARGS` as a process on another machine: its own COVE_HOME (no database of its own) and config."""
    return subprocess.run(
        [sys.executable, "-m", "studio.cli", *args],
        env=cove_env(laptop) | env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.runtime
def test_a_member_logs_in_to_a_remote_cove_and_works_there_as_herself(
    settings: Settings, db: Database, stub_model: str, tmp_path: Path
) -> None:
    member(db, "ana", password=PASSWORD)
    image = add_fake_image(db, "scripted_runtime.py")
    deploy(db, "admins-chat", stub_model, image, replicas=0)
    folder = write_stub_model(tmp_path / "on-the-server")  # a folder the server reads
    server = CoveServer(settings, tmp_path / "server.log").start()
    laptop = make_settings(tmp_path / "laptop")
    url = settings.gateway_url
    try:
        wrong = cove(laptop, "login", url, "--user", "ana", "--password-stdin", stdin="not it\n")
        assert wrong.returncode == 1
        assert "error: wrong user name or password" in wrong.stderr
        assert "cove login URL --token TOKEN" in wrong.stderr  # the way in for people without a password
        assert not login.credentials_file().exists()

        logged = ok(cove(laptop, "login", url, "--user", "ana", "--password-stdin", stdin=PASSWORD + "\n"))
        assert f"logged in to {url} as ana (token cli-ana-" in logged
        saved = laptop.home / "config" / "credentials.json"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert PASSWORD not in saved.read_text()
        token_name = json.loads(saved.read_text())["token_name"]
        assert ok(cove(laptop, "whoami")) == f"ana (member) at {url}, with token {token_name}: *\n"

        folder_refused = cove(laptop, "model", "add", "mine", str(folder))  # read by the server: an admin's right
        assert folder_refused.returncode == 1
        assert "only an admin may register a model from a folder on the server" in folder_refused.stderr
        listed_models = json.loads(ok(cove(laptop, "model", "list", "--json")))
        assert [(m["name"], m["owner"]) for m in listed_models] == [("stub", "admin")]  # the remote's catalog
        created = cove(
            laptop, "deploy", "create", "chat", "--model", stub_model, "--image", image, "--cpu", "0.5",
            "--memory-mib", "256", "--wait", "--timeout", "60",
        )  # fmt: skip
        assert ok(created).splitlines()[-1] == f"ready: {url}/v1 with model='chat'"
        assert "chat: Ready 1/1" in created.stderr  # the status lines, watched over the API
        listed = ok(cove(laptop, "deploy", "list")).splitlines()
        assert [line.split()[:3] for line in listed[1:]] == [["chat", "ana", "Ready"]]  # hers only

        generation = json.loads(ok(cove(laptop, "deploy", "get", "chat", "--json")))["deployment"]["generation"]
        ok(cove(laptop, "deploy", "scale", "chat", "2", "--if-match", str(generation)))
        stale = cove(laptop, "deploy", "scale", "chat", "1", "--if-match", str(generation))
        assert stale.returncode == 1
        assert f"changed since it was read: its generation is {generation + 1}, not {generation}" in stale.stderr
        refused = cove(laptop, "deploy", "delete", "admins-chat")
        assert (refused.returncode, "not yours" in refused.stderr) == (1, True), refused.stderr
        deleted = ok(cove(laptop, "deploy", "delete", "chat", "--wait", "--timeout", "60"))
        assert deleted.splitlines() == ["deployment chat: deleting", "deployment chat: deleted"]
        assert not (laptop.home / "cove.db").exists()  # no local database was ever opened

        token = json.loads(saved.read_text())["token"]
        assert ok(cove(laptop, "logout")) == f"logged out of {url}\n"
        assert not saved.exists()
        revoked = {k.name: k.revoked_at for k in keys.list_keys(db=db, actor=ADMIN)}
        assert revoked[token_name] is not None
        again = cove(laptop, "deploy", "list", COVE_API_URL=url, COVE_TOKEN=token)
        assert again.returncode == 1
        assert "error: this token is unknown or revoked" in again.stderr
        assert "cove login URL" in again.stderr

        reader = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="ro", scopes=["deployments:read"]))
        ok(cove(laptop, "login", url, "--token", reader.key))
        assert "admins-chat" in ok(cove(laptop, "deploy", "list"))  # as the admin now, who sees every deployment
        narrow = cove(laptop, "deploy", "scale", "admins-chat", "1")
        assert narrow.returncode == 1
        assert "deployments:write" in narrow.stderr  # the token's scopes hold, whoever owns it
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ in process


def password_login(settings: Settings, db: Database, name: str, password: str) -> ApiKeyCreated:
    """``POST /login`` without a bearer token (the route needs none)."""
    with Client.in_process(build_api(settings=settings, db=db)) as anyone:
        created: ApiKeyCreated = anyone.call(ApiKeyCreated, "POST", "/login", body={"name": name, "password": password})
        return created


def test_a_password_becomes_a_token_of_theirs_with_every_scope_that_expires(settings: Settings, db: Database) -> None:
    member(db, "ana", password=PASSWORD)
    created = password_login(settings, db, "ana", PASSWORD)
    assert (created.owner, created.scopes, created.name.startswith("cli-ana-")) == ("ana", ["*"], True)
    assert created.expires_at is not None
    assert timedelta(days=29) < created.expires_at - utcnow() <= timedelta(days=30)
    with Client.in_process(build_api(settings=settings, db=db)) as client:
        client.http.headers["Authorization"] = f"Bearer {created.key}"
        assert client.whoami()["name"] == "ana"


@pytest.mark.parametrize("name", ["ana", "admin", "nobody"])  # a wrong password, no password, no such user
def test_a_refused_login_says_only_what_the_login_page_says(settings: Settings, db: Database, name: str) -> None:
    member(db, "ana", password=PASSWORD)
    with pytest.raises(Unauthorized) as refused:
        password_login(settings, db, name, "not it")
    assert refused.value.message == "wrong user name or password"
    assert "cove login URL --token TOKEN" in refused.value.hint
    assert keys.list_keys(db=db, actor=ADMIN) == []


def test_saved_credentials_are_readable_by_their_owner_only_and_make_a_client() -> None:
    with pytest.raises(Unauthorized, match="no `cove login` on this machine"):
        Client.from_login()
    path = login.save(login.Login(url="https://cove.example.com", token="cove-secret", user="ana", token_name="t"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert login.load() == login.Login("https://cove.example.com", "cove-secret", "ana", "t")
    with Client.from_login() as client:
        assert (client.url, client.http.headers["Authorization"]) == ("https://cove.example.com", "Bearer cove-secret")
    assert login.forget()
    assert login.load() is None


def test_without_a_login_commands_act_on_this_machines_cove(settings: Settings, db: Database) -> None:
    env = {k: v for k, v in cove_env(settings).items() if k.startswith("COVE_")}
    result = CliRunner().invoke(cli, ["whoami"], env=env, catch_exceptions=False)
    assert (
        result.output == f"admin (admin) at this machine's Cove ({settings.home}), with token local: all they may do\n"
    )
    created = CliRunner().invoke(cli, ["token", "create", "ci", "--scope", "deployments:read"], env=env)
    assert "(token ci, scopes deployments:read: store it now" in created.output
    assert [(k.name, k.scopes) for k in keys.list_keys(db=db, actor=ADMIN)] == [("ci", ["deployments:read"])]


class NotACove(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def elsewhere() -> Iterator[str]:
    """A web server that is not a Cove."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotACove)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_a_url_that_is_not_a_cove_is_named_so(elsewhere: str) -> None:
    result = CliRunner().invoke(cli, ["login", elsewhere, "--token", "cove-x"])
    assert result.exit_code == 1
    assert f"error: {elsewhere} answers, but not as a Cove: it gave a text/html page" in result.output
    assert not login.credentials_file().exists()
