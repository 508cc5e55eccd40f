"""``cove up``: everything Cove runs, in the foreground, stopped together by Ctrl-C.

Each part (the server, i.e. gateway + controller; the studio UI; the playground; the notebook hub) is a child
process in a session of its own, so Ctrl-C reaches ``cove up`` alone and the parts are stopped in order: SIGTERM, a
grace period, then SIGKILL. Children are also told to stop if ``cove up`` itself dies (Linux parent-death signal), so
nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from studio.bootstrap import open_studio
from studio.demo import DEMO_DEPLOYMENT, ensure_demo
from studio.errors import NotFound
from studio.server import bind
from studio.services import deployments
from studio.settings import Settings
from studio.values import Status

PORTS = (
    ("port", "COVE_PORT"),
    ("ui_port", "COVE_UI_PORT"),
    ("playground_port", "COVE_PLAYGROUND_PORT"),
    ("hub_port", "COVE_HUB_PORT"),
)
STOP_GRACE_S = 30.0  # the server itself gives its replicas 10 s
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):  # not Linux: children are still stopped by a clean shutdown
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Part:
    name: str
    argv: list[str]
    url: str  # where it answers once ready
    proc: subprocess.Popen[bytes] | None = None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Supervisor:
    def __init__(self, parts: list[Part], say: Callable[[str], None]) -> None:
        self.parts, self.say = parts, say
        self.stopping = threading.Event()

    def start(self) -> None:
        for part in self.parts:
            part.proc = subprocess.Popen(part.argv, start_new_session=True, preexec_fn=_die_with_parent)

    def exited(self) -> Part | None:
        return next((p for p in self.parts if p.proc is not None and p.proc.poll() is not None), None)

    def wait_ready(self, timeout: float) -> Part | None:
        """The first part that died while starting, or None once all answer (or time runs out)."""
        deadline = time.monotonic() + timeout
        pending = list(self.parts)
        while pending and time.monotonic() < deadline and not self.stopping.is_set():
            dead = self.exited()
            if dead is not None:
                return dead
            pending = [p for p in pending if not _answers(p.url)]
            self.stopping.wait(0.2)
        return None

    def stop(self) -> None:
        for part in self.parts:
            if part.proc is not None and part.proc.poll() is None:
                part.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for part in self.parts:
            if part.proc is None:
                continue
            try:
                part.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{part.name} did not stop in {STOP_GRACE_S:.0f} s; killing it")
                part.proc.kill()
                part.proc.wait()


def _wait_for_demo(settings: Settings, say: Callable[[str], None], sup: Supervisor, timeout: float = 300) -> None:
    db = open_studio(settings)
    try:
        last, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline and not sup.stopping.is_set() and sup.exited() is None:
            try:
                dep = deployments.get_deployment(db=db, name=DEMO_DEPLOYMENT)
            except NotFound:
                return
            line = f"demo: {dep.status}" + (f" ({dep.message.splitlines()[0]})" if dep.message else "")
            if line != last:
                say(line)
                last = line
            if dep.status in (Status.READY, Status.FAILED, Status.STOPPED):
                return
            sup.stopping.wait(0.5)
    finally:
        db.dispose()


def up(settings: Settings, *, demo: bool, say: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C (0) or until a part dies (1)."""
    for port, variable in PORTS:  # fail fast, before any work, if a port is taken
        bind(settings.host, getattr(settings, port), variable).close()
    db = open_studio(settings)
    try:
        key = ensure_demo(settings=settings, db=db, say=say) if demo else None
    finally:
        db.dispose()
    python = sys.executable
    parts = [
        Part("server", [python, "-m", "studio.cli", "server"], settings.listen_url + "/healthz"),
        Part("studio UI", [python, "-m", "studio.cli", "ui"], settings.ui_url + "/_stcore/health"),
        Part("playground", [python, "-m", "studio.cli", "playground"], settings.playground_url + "/"),
        Part("notebook hub", [python, "-m", "studio.cli", "hub"], settings.hub_url + "/hub/health"),
    ]
    sup = Supervisor(parts, say)
    previous = {sig: signal.signal(sig, lambda *_: sup.stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sup.start()
        dead = sup.wait_ready(timeout=120)
        if dead is None and demo:
            _wait_for_demo(settings, say, sup)
        if dead is None and not sup.stopping.is_set():
            _banner(settings, key, say)
            while not sup.stopping.is_set() and (dead := sup.exited()) is None:
                sup.stopping.wait(0.5)
        if dead is not None and not sup.stopping.is_set():
            say(f"{dead.name} exited with code {dead.proc.returncode if dead.proc else '?'}; stopping Cove")
            return_code = 1
        else:
            say("stopping Cove …")
            return_code = 0
    finally:
        sup.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("stopped")
    return return_code


def _banner(settings: Settings, key: str | None, say: Callable[[str], None]) -> None:
    base = settings.gateway_url
    lines = [
        "",
        "Cove is running. Ctrl-C stops everything.",
        f"  studio                       {settings.ui_url}",
        f"  playground                   {settings.playground_url}",
        f"  notebooks (JupyterHub)       {settings.hub_url}",
        f"  gateway (OpenAI-compatible)  {base}/v1",
        f"  health / metrics             {base}/healthz   {base}/metrics",
        f"  state                        {settings.home}",
    ]
    if key:
        lines += [
            f"  demo API key                 {key}",
            "",
            "Try it:",
            f"  curl {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \\",
            "       -H 'Content-Type: application/json' \\",
            f'       -d \'{{"model": "{DEMO_DEPLOYMENT}", "messages": [{{"role": "user", '
            '"content": "What is Cove?"}]}\'',
        ]
    say("\n".join(lines) + "\n")
