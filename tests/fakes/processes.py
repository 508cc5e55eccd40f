"""Model-server processes played in memory, for unit tests of the local backend: ``Runtimes(Kind).spawn`` and
``.probe`` stand where ``subprocess.Popen`` and the HTTP health probe stand, and a ``FakeClock`` stands for time.
Nothing is started and nothing listens, so a test can jump through minutes of restarts and timeouts at once.

Each process kind is named for the one behaviour it plays (healthy, crashing, never ready). The backend signals a
replica's process group by pid, which no fake has: a fake never sees SIGTERM or SIGKILL. A test plays a process
ending with ``exit``; ``wait``, which the backend calls only after it has killed a process, returns as a killed
process would.
"""

from __future__ import annotations

import signal
from typing import IO, Any, ClassVar

FIRST_PID = 2**22 + 1  # above Linux's largest pid: no real process can be mistaken for a fake


class FakeClock:
    """A monotonic clock that moves only when told to; pass it where Cove takes ``clock=``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeProcess:
    """What the backend uses of a ``Popen``: ``pid``, ``poll`` and ``wait``. Runs until it exits."""

    health: ClassVar[str] = ""  # what the probe finds wrong; '' is healthy
    exits_at_start: ClassVar[int | None] = None  # an exit code: the process ends as soon as it starts
    says_at_start: ClassVar[tuple[str, ...]] = ()  # lines written to its log when it starts

    def __init__(self, *, pid: int, argv: tuple[str, ...], env: dict[str, str], started_at: float) -> None:
        self.pid, self.argv, self.env, self.started_at = pid, argv, env, started_at
        self.returncode: int | None = self.exits_at_start
        self.port = int(argv[argv.index("--port") + 1])
        self.waited = False

    @property
    def gpus(self) -> str:
        """The GPUs the backend gave it (CUDA_VISIBLE_DEVICES)."""
        return self.env["CUDA_VISIBLE_DEVICES"]

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.waited = True
        if self.returncode is None:
            self.returncode = -signal.SIGKILL
        return self.returncode

    def exit(self, code: int) -> None:
        self.returncode = code


class HealthyProcess(FakeProcess):
    """Answers its health checks from the start."""


class NeverReadyProcess(FakeProcess):
    """Keeps running and never answers its health checks, like a runtime stuck loading its weights."""

    health = "GET /health: [Errno 111] Connection refused"


class CrashingProcess(FakeProcess):
    """Writes a few log lines and exits 1 at once, like a runtime that runs out of memory while loading."""

    exits_at_start = 1
    says_at_start = (
        "loading model weights …",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB (simulated)",
    )


class Runtimes:
    """``spawn`` and ``probe`` for a LocalBackend: every process started is a ``kind``, remembered in ``started``."""

    def __init__(self, kind: type[FakeProcess], clock: FakeClock) -> None:
        self.kind, self.clock = kind, clock
        self.started: list[FakeProcess] = []

    def spawn(self, argv: tuple[str, ...], *, stdout: IO[bytes], env: dict[str, str], **_: Any) -> FakeProcess:
        proc = self.kind(pid=FIRST_PID + len(self.started), argv=tuple(argv), env=env, started_at=self.clock())
        for line in proc.says_at_start:
            stdout.write(line.encode() + b"\n")
        self.started.append(proc)
        return proc

    def probe(self, host: str, port: int, path: str) -> str:
        running = [p for p in self.started if p.port == port and p.returncode is None]
        return running[-1].health if running else f"GET {path}: [Errno 111] Connection refused"

    def running(self) -> list[FakeProcess]:
        return [p for p in self.started if p.returncode is None]
