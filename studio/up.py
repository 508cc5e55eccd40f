"""``cove up``: everything Cove runs, in the foreground, stopped together by Ctrl-C.

Each part (the server, i.e. gateway + controller; the studio UI; the playground; the notebook hub) is a child
process in a session of its own, so Ctrl-C reaches ``cove up`` alone and the parts are stopped in order: SIGTERM, a
grace period, then SIGKILL. Children are also told to stop if ``cove up`` itself dies (Linux parent-death signal), so
nothing is orphaned.

The terminal shows Cove's own progress and nothing else: each part's output (stdout and stderr) is appended to
``COVE_HOME/logs/<service>.log`` (read it with ``cove logs SERVICE``) after a header line per start, and a log past
``MAX_LOG_BYTES`` is first moved to ``.log.1``, as the local backend does with replicas' logs. ``--verbose`` copies
every part's output to the terminal as well. When a part exits, ``cove up`` says which, with its exit code and the
last lines of its log, and stops the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from studio.backends.local import HEADER, LOG_TAIL, MAX_LOG_BYTES, last_attempt, tail_lines
from studio.bootstrap import open_studio
from studio.demo import DEMO_DEPLOYMENT, ensure_demo
from studio.errors import NotFound
from studio.server import bind, refuse_exposed
from studio.services import deployments, users
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


def service_log(settings: Settings, service: str) -> Path:
    """Where ``cove up`` writes the output of ``service``, the command that runs the part (``cove hub``, …)."""
    return settings.logs_dir / f"{service}.log"


def service_log_tail(settings: Settings, service: str, n: int) -> list[str]:
    """The last ``n`` lines of ``service``'s log; NotFound when ``cove up`` has not run it under this COVE_HOME."""
    path = service_log(settings, service)
    if not path.is_file():
        raise NotFound(
            f"{service} has not run under {settings.home} yet: there is no {path}",
            hint="start Cove with `cove up` (with this COVE_HOME); each part's output is kept there",
        )
    return tail_lines(path, n)


def start_header(service: str, stamp: str) -> str:
    """The line written to a service's log before each start (``last_attempt`` finds the lines after it)."""
    return f"{HEADER}{stamp}: cove up starting {service}\n"


def open_log(path: Path, service: str) -> IO[bytes]:
    """``path`` opened for appending, with a start header written; moved to ``.log.1`` first if past MAX_LOG_BYTES."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
        path.replace(path.with_suffix(".log.1"))
    log_file = path.open("ab")
    log_file.write(start_header(service, time.strftime("%Y-%m-%dT%H:%M:%S%z")).encode())
    log_file.flush()
    return log_file


def exit_report(name: str, code: int | None, log_path: Path, lines: list[str]) -> list[str]:
    """What ``cove up`` says when a part exits: which part, how it ended, and ``lines``, its log since it started."""
    how = f"exited with code {code}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            how = f"was killed by {signal.Signals(-code).name}"
    shown = list(lines)
    while shown and not shown[-1].strip():  # a traceback's blank ending says nothing
        shown.pop()
    if not shown:
        return [f"{name} {how} before writing anything to {log_path}"]
    return [f"{name} {how}; the last lines of {log_path}:", *(f"    {line}" for line in shown)]


def _tee(source: IO[bytes], log_path: Path, echo: IO[bytes]) -> None:
    """Copy a part's output to its log and to the terminal, chunk by chunk, until every writer has closed the pipe."""
    terminal: IO[bytes] | None = echo
    with source, log_path.open("ab") as log_file:
        while chunk := os.read(source.fileno(), 65536):
            log_file.write(chunk)
            log_file.flush()
            if terminal is not None:
                try:
                    terminal.write(chunk)
                    terminal.flush()
                except OSError:  # the terminal is gone (closed pipe, hang-up): the log must still be written
                    terminal = None


@dataclass
class Part:
    name: str  # in words, for messages
    service: str  # the `cove` command that runs it, and its log's name
    url: str  # where it answers once ready
    proc: subprocess.Popen[bytes] | None = None
    tee: threading.Thread | None = None  # copies its output to its log and the terminal (--verbose)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "studio.cli", self.service]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Supervisor:
    """Starts the parts with their output in their logs (and on ``echo``, the terminal, when given), and stops them."""

    def __init__(
        self, parts: list[Part], say: Callable[[str], None], *, settings: Settings, echo: IO[bytes] | None = None
    ) -> None:
        self.parts, self.say, self.settings, self.echo = parts, say, settings, echo
        self.stopping = threading.Event()

    def start(self) -> None:
        env = os.environ | {"PYTHONUNBUFFERED": "1"}  # a log gets lines as they are written, not in 8 KiB blocks
        for part in self.parts:
            path = service_log(self.settings, part.service)
            with open_log(path, part.service) as log_file:
                part.proc = subprocess.Popen(
                    part.argv,
                    stdout=log_file if self.echo is None else subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            if self.echo is not None and part.proc.stdout is not None:
                part.tee = threading.Thread(target=_tee, args=(part.proc.stdout, path, self.echo), daemon=True)
                part.tee.start()

    def report(self, part: Part) -> list[str]:
        """How ``part`` ended, with its log's last lines since this start."""
        if part.tee is not None:
            part.tee.join(timeout=2)  # its last lines may still be in the pipe; a child of it may hold the pipe open
        path = service_log(self.settings, part.service)
        code = part.proc.returncode if part.proc is not None else None
        return exit_report(part.name, code, path, last_attempt(tail_lines(path, LOG_TAIL)))

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
        for part in self.parts:
            if part.tee is not None:
                part.tee.join(timeout=5)  # a grandchild that outlived its parent may hold the pipe; it is a daemon


def _wait_for_demo(settings: Settings, say: Callable[[str], None], sup: Supervisor, timeout: float = 300) -> None:
    db = open_studio(settings)
    admin = users.first_admin(db=db)
    try:
        last, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline and not sup.stopping.is_set() and sup.exited() is None:
            try:
                dep = deployments.get_deployment(db=db, actor=admin, name=DEMO_DEPLOYMENT)
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


def _demo(settings: Settings, say: Callable[[str], None]) -> str | None:
    db = open_studio(settings)
    try:
        return ensure_demo(settings=settings, db=db, say=say)
    finally:
        db.dispose()


def up(settings: Settings, *, demo: bool, verbose: bool = False, say: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C (0) or until a part dies (1). ``verbose``: the parts' output on the terminal too."""
    refuse_exposed(settings)  # fail fast, before any work, if a face would be open to anyone
    for port, variable in PORTS:  # or if a port is taken
        bind(settings.host, getattr(settings, port), variable).close()
    db = open_studio(settings)  # the database migrated before any part opens it
    password = users.first_admin_password(db=db)  # the first start only: printed now and in the banner, never again
    db.dispose()
    if password:
        say(f"first start: log in as {users.FIRST_ADMIN!r} with password {password} (shown this once)")
    parts = [
        Part("server", "server", settings.listen_url + "/healthz"),
        Part("studio UI", "ui", settings.ui_url + "/_stcore/health"),
        Part("playground", "playground", settings.playground_url + "/healthz"),
        Part("notebook hub", "hub", settings.hub_url + "/hub/health"),
    ]
    sup = Supervisor(parts, say, settings=settings, echo=sys.stdout.buffer if verbose else None)
    previous: dict[int, Any] = {}
    try:
        sup.start()  # the parts start while the demo model is built: the first start is quicker by their start-up
        key = _demo(settings, say) if demo else None
        previous = {sig: signal.signal(sig, lambda *_: sup.stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        dead = sup.wait_ready(timeout=120)
        if dead is None and demo:
            _wait_for_demo(settings, say, sup)
            dead = sup.exited()  # a part that died while the demo started is said before any banner
        if dead is None and not sup.stopping.is_set():
            _banner(settings, key, [p.service for p in parts], say, password=password)
            while not sup.stopping.is_set() and (dead := sup.exited()) is None:
                sup.stopping.wait(0.5)
        return_code = 0
        if dead is not None and not sup.stopping.is_set():
            say("\n".join(sup.report(dead)))
            return_code = 1
        say("stopping Cove …")
    finally:
        sup.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("stopped")
    return return_code


def _banner(
    settings: Settings, key: str | None, services: list[str], say: Callable[[str], None], *, password: str | None
) -> None:
    base = settings.gateway_url
    login = (
        [f"  log in as                    {users.FIRST_ADMIN} / {password}   (shown once: store it now)"]
        if password
        else []
    )
    lines = [
        "",
        "Cove is running. Ctrl-C stops everything.",
        *login,
        f"  studio                       {settings.ui_url}",
        f"  playground                   {settings.playground_url}",
        f"  notebooks (JupyterHub)       {settings.hub_url}",
        f"  gateway (OpenAI-compatible)  {base}/v1",
        f"  API (cove.Client, CLI)       {base}/api/v1   (docs: {base}/api/v1/docs)",
        f"  health / metrics             {base}/healthz   {base}/metrics",
        f"  state                        {settings.home}",
        f"  logs                         {settings.logs_dir} (cove logs {'|'.join(services)})",
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
