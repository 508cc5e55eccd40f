"""Fixtures shared by every tier: settings in a temporary COVE_HOME, databases (SQLite and a throwaway
PostgreSQL server started for the session; each test's database a copy of one migrated per session), and the demo
model built once per session."""

from __future__ import annotations

import contextlib
import gc
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from studio.db import make_engine, migrate
from studio.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach the Hub; the real loading paths run offline
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# ------------------------------------------------------------------------------------------------ garbage collection
# Collecting the suite imports most of the stack (gradio, streamlit, JupyterHub, the Kubernetes client, pandas):
# millions of long-lived objects that every full garbage collection walks again, the interpreter's last one at exit
# included. The collector is off while the suite is collected, and what collection leaves is frozen (gc.freeze: never
# walked again); so is everything at the end. This saves about 8 s of `make test-fast` here (3 s of collection, 5 s
# at exit).


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    gc.disable()
    try:
        return (yield)
    finally:
        gc.freeze()
        gc.enable()


def pytest_unconfigure(config: pytest.Config) -> None:
    gc.freeze()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: each held until all are chosen (one at a time, the system may hand the same
    port out twice, and the hub then finds its proxy on its own port)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


PORTS = ("port", "ui_port", "playground_port", "hub_port", "hub_api_port", "hub_proxy_api_port")


def make_settings(home: Path, **overrides: object) -> Settings:
    """Settings for tests: fast loops, a private home, free ports (all different)."""
    values: dict[str, object] = {
        "home": home,
        **dict(zip(PORTS, free_ports(len(PORTS)), strict=True)),
        "controller_interval_s": 0.2,
        "routes_refresh_s": 0.2,
        "usage_flush_s": 0.2,
        "runtime_stop_grace_s": 5,
        "demo": False,
        "login": False,  # the faces act as the first admin; the login tests turn it on
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_real_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own `cove login` (and COVE_API_URL / COVE_TOKEN) never reaches a test: the CLI would send
    every command to their Cove."""
    monkeypatch.setenv("COVE_CONFIG_DIR", str(tmp_path / "cove-config"))
    for name in ("COVE_API_URL", "COVE_TOKEN"):
        monkeypatch.delenv(name, raising=False)


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


def new_postgres_database(base_url: str, *, template: str | None = None) -> str:
    """A new database on the server at ``base_url``: empty, or a copy of the database named ``template``."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        copy = f' TEMPLATE "{template}"' if template else ""
        if template and conn.info.server_version >= 150000:
            copy += " STRATEGY FILE_COPY"  # copies a small database in about half the time of the default (WAL_LOG)
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    return f"{base_url}/{name}"


# ------------------------------------------------------------------------------------------------ Redis


class RedisServer:
    """A throwaway redis-server on loopback, without persistence; ``stop`` and ``start`` again on the same port (a
    store that goes away and comes back)."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing: run `make services` (scripts/test-services) first")
        self.binary, self.root, self.port = binary, root, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with (self.root / "redis.log").open("ab") as log:
            self.process = subprocess.Popen([self.binary, *options, "--dir", str(self.root)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start: {(self.root / 'redis.log').read_text()}")
            time.sleep(0.01)  # redis-server starts in a few milliseconds
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (every test using it is marked ``redis``)."""
    root = tmp_path / "redis"
    root.mkdir()
    server = RedisServer(root).start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ databases
# Migrating an empty database costs more than most tests that use one, so each kind is migrated once per session (a
# template) and every test gets a copy: a file copy for SQLite, CREATE DATABASE … TEMPLATE for PostgreSQL. Tests of
# the migrations themselves (tests/integration/test_db.py) start from empty databases.


def _migrate_to_head(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
        if engine.dialect.name == "sqlite":  # fold the write-ahead log into the file, which is all a copy takes
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file at the newest schema revision, made once per session; copy it, never open it."""
    path = tmp_path_factory.mktemp("template") / "cove.db"
    _migrate_to_head(f"sqlite:///{path}")
    return path


def copy_sqlite_template(template: Path, path: Path) -> str:
    """A copy of the template at ``path``; its URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def postgres_template(postgres: str) -> str:
    """The name of a PostgreSQL database at the newest schema revision, made once per session. Nothing stays
    connected to it: CREATE DATABASE … TEMPLATE needs it idle."""
    url = new_postgres_database(postgres)
    _migrate_to_head(url)
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind Cove supports, at the newest schema revision and holding no rows."""
    if request.param == "sqlite":
        return copy_sqlite_template(request.getfixturevalue("sqlite_template"), tmp_path / "cove.db")
    return new_postgres_database(
        request.getfixturevalue("postgres"), template=request.getfixturevalue("postgres_template")
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind Cove supports: no schema at all, for tests of the migrations."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cove.db'}"
    return new_postgres_database(request.getfixturevalue("postgres"))


# ------------------------------------------------------------------------------------------------ demo model


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Training the demo model is the costliest setup in the suite: every test that asks for it is marked ``torch``,
    so a quick run can leave them out by marker; every test with a Redis server of its own, ``redis``."""
    for item in items:
        if "demo_folder" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.torch)
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model as a plain folder, built once per session (about 10 s)."""
    from studio.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo") / "demo-chat")
