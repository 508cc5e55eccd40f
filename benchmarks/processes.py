"""The processes a benchmark starts (``cove server``, the standalone gateway, mock runtimes): each with its output
appended to a log file, waited on until it answers, and stopped with SIGTERM (SIGKILL when it does not stop).

A process that exits while it is waited on, or does not answer in time, ends the benchmark with ``SystemExit``
naming it and showing its log's last lines (one that did not answer is stopped first).
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def answers(url: str, timeout: float = 1) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(
    command: Sequence[str],
    *,
    log: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` (``env``: its whole environment; ``new_session``: in a session of its own, so a terminal's
    Ctrl-C reaches only the benchmark) and return it once ``ready()`` is true."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=new_session,
        )
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"{what} did not answer in {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; returns once it has exited."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
