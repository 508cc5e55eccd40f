"""A standalone gateway (``python -m studio.gateway``) in front of ``mock_upstream.py``, for the load benchmarks
(``key_flood.py``, ``slow_clients.py``, ``many_streams.py``).

``gateway_rig(...)`` makes a throwaway COVE_HOME with a database (SQLite there, or the PostgreSQL database at
``database_url``), starts the mock runtime, writes what a controller would (a deployment ``chat`` Ready at the mock),
creates one API key, starts the gateway as a process of its own with keys and metering on, and waits until its
``/readyz`` says ok (``processes.start``). On leaving it stops both with SIGTERM (SIGKILL after 20 s) and removes
the folder (``keep``: leaves it).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from studio.bootstrap import open_studio
from studio.models import ApiKeyCreate, DeploymentCreate, ImageCreate, ModelCreate, Observed
from studio.services import deployments, images, keys, models, users
from studio.settings import Settings
from studio.values import Resources, Status

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MOCK = HERE / "mock_upstream.py"
DEPLOYMENT = "chat"
CHAT = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "What is Cove?"}]}

sys.path.insert(0, str(HERE))
import processes  # noqa: E402  (sibling scripts)
from gateway_overhead import cove_home, free_port, percentile, tail, write_fake_model  # noqa: E402


@dataclass
class Rig:
    url: str  # the gateway's base URL
    key: str  # a working API key for deployment ``chat``
    mock_url: str  # the mock runtime's base URL (the upstream model is named ``upstream``)
    gateway: subprocess.Popen[bytes]
    home: Path
    database_url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def rss_mib(self) -> float:
        return float(psutil.Process(self.gateway.pid).memory_info().rss) / 2**20

    def log(self, lines: int = 30) -> str:
        return tail(self.home / "gateway.log", lines)


def raise_fd_limit(need: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``need`` (the hard limit at most); processes started after inherit
    it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def _ready(url: str) -> bool:
    try:
        return bool(httpx.get(url + "/readyz", timeout=2).json().get("status") == "ok")
    except (httpx.HTTPError, ValueError):
        return False


@contextlib.contextmanager
def gateway_rig(
    *, env: dict[str, str] | None = None, mock_args: tuple[str, ...] = (), database_url: str = "", keep: bool = False
) -> Iterator[Rig]:
    """The gateway (with ``env`` added to its environment: ``COVE_*`` settings) in front of the mock runtime
    (``mock_args`` added to its command line)."""
    procs: list[subprocess.Popen[bytes]] = []
    with cove_home(keep, "cove-bench-load-") as home:
        try:
            settings = Settings(home=home, port=free_port(), demo=False, login=False, database_url=database_url)
            db = open_studio(settings)
            admin = users.first_admin(db=db)
            mock_port = free_port()
            mock_url = f"http://127.0.0.1:{mock_port}"
            mock = processes.start(
                [sys.executable, str(MOCK), "--port", str(mock_port), "--model", "upstream", *mock_args],
                log=home / "mock.log",
                ready=lambda: processes.answers(mock_url + "/health"),
                what="the mock runtime",
                timeout=30,
            )
            procs.append(mock)

            models.add_model(
                db=db,
                actor=admin,
                data=ModelCreate(name="tiny", source=str(write_fake_model(home / "tiny-model"))),
                cache_dir=settings.models_dir,
            )
            command = [sys.executable, str(MOCK), "--port", "{port}"]  # never run here: the gateway only needs a route
            images.add_image(
                db=db,
                actor=admin,
                data=ImageCreate(name="mock", version="1", ref="example.com/mock", local_command=command),
            )
            deployments.create_deployment(
                db=db,
                actor=admin,
                data=DeploymentCreate(
                    name=DEPLOYMENT, model="tiny", image="mock", resources=Resources(cpu=0.5, memory_mib=256)
                ),
            )
            dep = next(d for d in deployments.desired_state(db=db) if d.name == DEPLOYMENT)
            deployments.record_observed(  # what a controller would write: Ready at the mock
                db=db,
                name=DEPLOYMENT,
                generation=dep.generation,
                events=[],
                observed=Observed(
                    status=Status.READY, ready_replicas=1, endpoints=[mock_url], upstream_model="upstream"
                ),
            )
            key = keys.create_key(db=db, actor=admin, data=ApiKeyCreate(name="bench")).key
            db.dispose()

            url = f"http://127.0.0.1:{settings.port}"
            environment = {
                **os.environ,
                "COVE_HOME": str(home),
                "COVE_PORT": str(settings.port),
                "COVE_HOST": "127.0.0.1",
                "COVE_DATABASE_URL": settings.db_url,
                "COVE_LOGIN": "false",
                "COVE_DEMO": "false",
                "COVE_LOG_LEVEL": "warning",
                **(env or {}),
            }
            gateway = processes.start(
                [sys.executable, "-m", "studio.gateway"],
                log=home / "gateway.log",
                ready=lambda: _ready(url),
                what="the gateway (its /readyz to say ok)",
                env=environment,
                cwd=ROOT,
            )
            procs.append(gateway)
            yield Rig(url=url, key=key, mock_url=mock_url, gateway=gateway, home=home, database_url=settings.db_url)
        finally:
            for proc in reversed(procs):
                processes.stop(proc)


def chat_latencies(rig: Rig, *, count: int | None = None, until: Callable[[], bool] | None = None) -> list[float]:
    """Sequential non-streaming chats on one keep-alive connection: ``count`` of them, or as many as fit until
    ``until()`` is true. Seconds each, in order; any answer but 200 stops the run."""
    times: list[float] = []
    headers = {"authorization": f"Bearer {rig.key}"}
    with httpx.Client(base_url=rig.url, headers=headers, timeout=60) as client:
        while (count is None or len(times) < count) and not (until is not None and until()):
            began = time.perf_counter()
            reply = client.post("/v1/chat/completions", json=CHAT)
            times.append(time.perf_counter() - began)
            if reply.status_code != 200:
                raise SystemExit(f"a real chat got {reply.status_code}: {reply.text[:500]}\n{rig.log()}")
    return times


def p50_p99(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return f"{statistics.median(ordered) * 1e3:.2f} / {percentile(ordered, 0.99) * 1e3:.2f} ms"


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {load}"


def bindable(address: str) -> bool:
    """Whether this host lets a socket bind ``address`` (Linux routes all of 127.0.0.0/8 to loopback)."""
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True
