"""Integration fixtures: real processes (``cove server``, model servers, fakes), real databases, and ways to wait
on conditions instead of sleeping."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import psutil
import pytest
import uvicorn

from studio.backends.local import LocalBackend
from studio.bootstrap import open_studio
from studio.controller import Controller
from studio.db import Database
from studio.errors import Conflict
from studio.gateway.app import Gateway
from studio.models import DeploymentCreate, ImageCreate, ModelCreate
from studio.services import deployments, images, models
from studio.settings import Settings
from studio.values import Principal, Resources
from tests.conftest import copy_sqlite_template
from tests.fakes import FAKES
from tests.people import ADMIN

if TYPE_CHECKING:  # imported by the tests that use them only (Streamlit: see _streamlit_components_scanned_once)
    import openai
    from streamlit.testing.v1 import AppTest

T = TypeVar("T")


def wait_until(check: Callable[[], T], *, timeout: float = 60, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def write_stub_model(folder: Path) -> Path:
    """The smallest folder Cove accepts as a model: config (of a tiny Llama, so its shape can be read), an empty
    safetensors file, a tokenizer. For fakes, which never load it."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64, **tiny}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _streamlit_components_scanned_once() -> Iterator[None]:
    """Each AppTest run scans the metadata of every installed distribution for Streamlit components (about 0.4 s here,
    for each of the studio page tests); what is installed does not change during a session, so the scan runs once."""
    if "streamlit" not in sys.modules:  # no collected test uses Streamlit
        yield
        return
    from streamlit.components.v2 import manifest_scanner

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            manifest_scanner, "scan_component_manifests", functools.cache(manifest_scanner.scan_component_manifests)
        )
        yield


@pytest.fixture
def db(settings: Settings, sqlite_template: Path) -> Iterator[Database]:
    """The studio's database in the test's COVE_HOME, opened as `cove` opens it (from a copy of the migrated
    template, so opening finds it at head)."""
    copy_sqlite_template(sqlite_template, settings.home / "cove.db")
    database = open_studio(settings)
    yield database
    database.dispose()


@pytest.fixture
def stub_model(db: Database, tmp_path: Path) -> str:
    models.add_model(
        actor=ADMIN,
        db=db,
        data=ModelCreate(name="stub", source=str(write_stub_model(tmp_path / "stub"))),
        cache_dir=tmp_path / "cache",
    )
    return "stub"


def add_fake_image(db: Database, script: str, *args: str) -> str:
    """Register ``tests/fakes/SCRIPT ARGS`` as a custom image that runs locally (once); returns its name."""
    name = "-".join([script.removesuffix(".py").replace("_", "-"), *(a.strip("-") for a in args)])
    with contextlib.suppress(Conflict):
        images.add_image(
            actor=ADMIN,
            db=db,
            data=ImageCreate(
                name=name,
                version="1",
                ref=f"example.com/{name}",
                local_command=[sys.executable, str(FAKES / script), "--port", "{port}", *args],
            ),
        )
    return name


def deploy(
    db: Database,
    name: str,
    model: str,
    image: str | None = None,
    replicas: int = 1,
    group: str | None = None,
    *,
    actor: Principal = ADMIN,
) -> None:
    """``actor`` (the admin, unless told) deploys ``model`` as ``name`` (shared with ``group``, whose members may
    then use it)."""
    deployments.create_deployment(
        actor=actor,
        db=db,
        data=DeploymentCreate(
            name=name,
            model=model,
            image=image,
            replicas=replicas,
            group=group,
            resources=Resources(cpu=0.5, memory_mib=256),
        ),
    )


def register_demo(db: Database, settings: Settings, folder: Path) -> None:
    """The demo model (built once per session in ``folder``) in the catalog as ``cove up`` registers it: the admin's."""
    models.register_built(
        actor=ADMIN, db=db, name="demo-chat", folder=folder, repo_id="cove/demo-chat", cache_dir=settings.models_dir
    )


def status_of(db: Database, name: str, wanted: str) -> bool:
    return deployments.get_deployment(actor=ADMIN, db=db, name=name).status == wanted


# ------------------------------------------------------------------------------------------------ in-process parts


@pytest.fixture
def controller(db: Database, settings: Settings) -> Iterator[Controller]:
    """The real controller on its thread with a LocalBackend; stops every replica at teardown."""
    ctl = Controller(db=db, backend=LocalBackend(settings), settings=settings)
    ctl.start()
    yield ctl
    ctl.stop(stop_workloads=True)


class GatewayServer:
    """The gateway app served by uvicorn on a thread, as `cove server` serves it."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.app = Gateway(settings=settings, db=db)
        self.url = settings.gateway_url
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> GatewayServer:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=20, what="the gateway to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def gateway(settings: Settings, db: Database) -> Iterator[GatewayServer]:
    with GatewayServer(settings, db) as server:
        yield server


# ------------------------------------------------------------------------------------------------ `cove` processes


def cove_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "COVE_HOME": str(settings.home),
            "COVE_PORT": str(settings.port),
            "COVE_UI_PORT": str(settings.ui_port),
            "COVE_PLAYGROUND_PORT": str(settings.playground_port),
            "COVE_HUB_PORT": str(settings.hub_port),
            "COVE_HUB_API_PORT": str(settings.hub_api_port),
            "COVE_HUB_PROXY_API_PORT": str(settings.hub_proxy_api_port),
            "COVE_DEMO": "false",
            "COVE_CONTROLLER_INTERVAL_S": str(settings.controller_interval_s),
            "COVE_ROUTES_REFRESH_S": str(settings.routes_refresh_s),
            "COVE_USAGE_FLUSH_S": str(settings.usage_flush_s),
            "COVE_RUNTIME_STOP_GRACE_S": str(settings.runtime_stop_grace_s),
            "COVE_LOG_LEVEL": "info",
            "COVE_LOGIN": str(settings.login).lower(),
            "COVE_CONFIG_DIR": str(settings.home / "config"),  # its own `cove login`, never the developer's
        }
    )
    for name in ("COVE_API_URL", "COVE_TOKEN"):
        env.pop(name, None)
    if settings.secret_key:
        env["COVE_SECRET_KEY"] = settings.secret_key
    if settings.database_url:
        env["COVE_DATABASE_URL"] = settings.database_url
    for name in PASSED_WHEN_SET:
        if name in settings.model_fields_set:
            value = getattr(settings, name)
            env[f"COVE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


# settings a test may give its `cove` process beside those above (only when it set them: defaults stay the child's)
PASSED_WHEN_SET = ("backend", "kubeconfig", "kube_namespace", "models_pvc", "pools", "leader_election",
                   "leader_lease_s", "leader_retry_s", "release")  # fmt: skip


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class CoveServer:
    """`cove server` as a child process, with its output in a log file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log_path = settings, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CoveServer:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "studio.cli", "server"],
                env=cove_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: answers(self.settings.gateway_url + "/healthz") or self.proc.poll() is not None,  # type: ignore[union-attr]
            timeout=60,
            what="cove server to answer /healthz",
        )
        assert self.proc.poll() is None, self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)


@contextlib.contextmanager
def sdk_against_server(
    settings: Settings, db: Database, log: Path, *, deployment: str, model: str
) -> Iterator[openai.OpenAI]:
    """`cove server` started with ``model`` (already in the catalog) deployed as ``deployment`` and Ready, and the
    `openai` SDK with a new key of the admin's against its gateway (no retries, so a failure shows as it is); the
    server is stopped after, its replica with it."""
    import openai

    from studio.models import ApiKeyCreate
    from studio.services import keys

    server = CoveServer(settings, log).start()
    try:
        deploy(db, deployment, model)
        wait_until(
            lambda: status_of(db, deployment, "Ready"), timeout=120, what=f"the deployment {deployment} to be Ready"
        )
        key = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="sdk")).key
        with openai.OpenAI(base_url=settings.gateway_url + "/v1", api_key=key, max_retries=0) as client:
            yield client
    finally:
        server.stop()


def runtime_pids(home: Path) -> set[int]:
    """Processes started from this COVE_HOME's replicas (their cwd is the home)."""
    pids = set()
    for proc in psutil.process_iter(["pid", "cwd"]):
        try:
            if proc.info["cwd"] == str(home) and proc.pid != os.getpid():
                pids.add(proc.pid)
        except psutil.Error:
            continue
    return pids


class CoveUp:
    """`cove up ARGS` as a child process, as a user runs it: its output collected line by line, Ctrl-C to stop."""

    def __init__(self, settings: Settings, *args: str, **env: str) -> None:
        self.settings, self.args = settings, list(args)
        self.env = cove_env(settings) | {"PYTHONUNBUFFERED": "1"} | env
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> CoveUp:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "up", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stdout = self.proc.stdout
        assert stdout is not None
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(stdout.readline, "")), daemon=True)
        self._reader.start()
        return self

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 180) -> str:
        """The first output line containing ``text``; fails early, with the output, if `cove up` exits."""
        assert self.proc is not None

        def seen() -> str | bool:
            found = next((line for line in self.lines if text in line), None)
            assert found or self.proc.poll() is None, f"cove up exited:\n{self.output}"  # type: ignore[union-attr]
            return found or False

        return str(wait_until(seen, timeout=timeout, what=f"{text!r} from cove up"))

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ------------------------------------------------------------------------------------------------ studio pages

APP = Path(__file__).resolve().parents[2] / "studio" / "ui" / "app.py"


@pytest.fixture
def ui(settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    """The studio app, run headless with AppTest, on the test's COVE_HOME (the pages read their settings from
    COVE_* like the real process); the pages' shared database is closed after."""
    from streamlit.testing.v1 import AppTest

    from studio.ui import facade

    for name, value in cove_env(settings).items():
        if name.startswith("COVE_"):
            monkeypatch.setenv(name, value)
    yield AppTest.from_file(str(APP), default_timeout=30)
    facade._shared().db.dispose()
    facade._open.clear()


def page(at: AppTest, name: str) -> AppTest:
    """Open the page ``studio/ui/app_pages/NAME.py``; fails on any exception it shows."""
    at.switch_page(f"app_pages/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def settle(at: AppTest) -> AppTest:
    """Run again after an action that ended in ``st.rerun``/``st.switch_page`` (AppTest stops there, as a browser
    would before its next run), so the page shows what the user sees next."""
    if "cove_flash" in at.session_state:
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements: object) -> str:
    return "\n".join(str(e.value) for e in elements)  # type: ignore[attr-defined]


def table(at: AppTest, index: int = 0) -> list[dict[str, object]]:
    return at.dataframe[index].value.to_dict("records")  # type: ignore[no-any-return]
