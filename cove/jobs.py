"""Following a job of the server's (a fine-tune, an evaluation, a benchmark run) until it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from studio.errors import CoveError
from studio.values import JobStatus


class Job(Protocol):
    @property
    def status(self) -> JobStatus: ...
    @property
    def message(self) -> str: ...


J = TypeVar("J", bound=Job)


def follow(
    get: Callable[[], J],
    *,
    what: str,
    seen: Callable[[J], str],
    failed_hint: str,
    late_hint: str,
    timeout: float,
    poll: float,
    on_progress: Callable[[J], None] | None,
) -> J:
    """Read the job with ``get`` every ``poll`` seconds until it ends and return it when it Succeeded; a CoveError
    naming ``what`` with its message when it failed or was cancelled (``failed_hint``), or after ``timeout`` seconds
    (``late_hint``). ``on_progress`` sees each change of what ``seen`` says of it."""
    deadline, last = time.monotonic() + timeout, ""
    while True:
        job = get()
        now = seen(job)
        if now != last and on_progress is not None:
            on_progress(job)
        last = now
        if job.status is JobStatus.SUCCEEDED:
            return job
        if job.status.finished:
            raise CoveError(f"{what} {job.status.value.lower()}: {job.message or 'no message'}", hint=failed_hint)
        if time.monotonic() + poll > deadline:
            raise CoveError(f"{what} is still {job.status.value} after {timeout:.0f} s", hint=late_hint)
        time.sleep(poll)
