"""Fixtures shared by every tier: settings in a temporary COVE_HOME, databases (SQLite and a throwaway
PostgreSQL server started for the session), and the demo model built once per session."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach the Hub; the real loading paths run offline
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(home: Path, **overrides: object) -> Settings:
    """Settings for tests: fast loops, a private home, a free gateway port."""
    values: dict[str, object] = {
        "home": home,
        "port": free_port(),
        "ui_port": free_port(),
        "playground_port": free_port(),
        "hub_port": free_port(),
        "hub_api_port": free_port(),
        "hub_proxy_api_port": free_port(),
        "controller_interval_s": 0.2,
        "routes_refresh_s": 0.2,
        "usage_flush_s": 0.2,
        "runtime_stop_grace_s": 5,
        "demo": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "cove")


# ------------------------------------------------------------------------------------------------ PostgreSQL


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail("PostgreSQL binaries are missing: run `make services` (scripts/test-services) first")


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on loopback for the whole session; yields its base URL."""
    bindir = _pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="cove-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    as_root = os.geteuid() == 0
    if as_root:  # initdb refuses to run as root
        for path in (root, sockets):
            shutil.chown(path, "postgres", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    port = free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True)
        if done.returncode:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            pytest.fail(f"{cmd[0]} failed: {done.stdout}{done.stderr}{log}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=200"
    )
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def new_postgres_database(base_url: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind Cove supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cove.db'}"
    return new_postgres_database(request.getfixturevalue("postgres"))


# ------------------------------------------------------------------------------------------------ demo model


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model as a plain folder, built once per session (about 10 s)."""
    from studio.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo") / "demo-chat")
