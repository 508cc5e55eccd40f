"""Holding requests for a sleeping deployment while the controller wakes it (scale to zero).

A deployment autoscaled with a minimum of 0 sleeps with no replica. A request for it is held: the first one of a
wake writes a wake request (``deployments.request_wake``, off the event loop), which the controller sees on its next
pass and answers by scaling to 1 (admitted against the pool) or by writing why it cannot. One watcher per wake reads
the deployment a few times a second and moves every held request on: streamed ones hear each new phase as an SSE
comment (``: waking demo — loading weights``), which OpenAI clients skip; all of them are released together once a
replica is Ready (its route, so none is sent to a replica that is not), or answered 503 when the pool refused the
wake or the wait passed ``timeout_s``. ``Wake`` and ``phase_of`` are the bookkeeping, free of I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from studio.db import Database, utcnow
from studio.errors import CoveError
from studio.services import deployments
from studio.services.deployments import WakeView
from studio.values import Route, Status

log = logging.getLogger(__name__)

RETRY_AFTER_S = 10  # what a 503 for a wake still under way asks clients to wait


def phase_of(view: WakeView) -> str:
    """What a waking deployment is doing, in the words its held streams hear."""
    if view.replicas == 0 or view.status in (Status.STOPPED, Status.PENDING):
        return "starting a replica" + (f" ({view.message})" if view.status == Status.PENDING and view.message else "")
    if view.status == Status.STARTING:
        return "loading weights"
    if view.status == Status.FAILED:
        return f"its replica is failing: {view.message.splitlines()[0] if view.message else 'see cove deploy logs'}"
    return "waiting for a ready replica"


class WakeFailed(Exception):
    """A held request cannot be served: answer 503 with ``retry_after`` and ``code``."""

    def __init__(self, message: str, *, code: str, retry_after: int) -> None:
        super().__init__(message)
        self.code, self.retry_after = code, retry_after


@dataclass
class Wake:
    """One wake of one deployment, shared by every request held for it. ``observe`` moves it on from what the
    database says; held requests wait on ``changed``, which is set (and replaced) on every change."""

    name: str
    started: float
    phase: str = "starting a replica"
    route: Route | None = None
    refused: str = ""
    held: int = 0
    cold_start_recorded: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def over(self) -> bool:
        return self.route is not None or bool(self.refused)

    def observe(self, view: WakeView | None) -> bool:
        """Take in the deployment as read now (None: it is gone); whether anything a held request sees changed."""
        before = (self.phase, self.route, self.refused)
        if view is None:
            self.refused = f"deployment {self.name!r} was deleted while it was waking"
        elif view.route is not None:
            self.route = view.route
        elif view.wake_refused:
            self.refused = view.wake_refused
        elif not view.sleeps and view.replicas == 0:
            self.refused = f"deployment {self.name!r} no longer scales from zero: it was scaled to 0 by hand"
        else:
            self.phase = phase_of(view)
        if (self.phase, self.route, self.refused) == before:
            return False
        self.changed.set()
        self.changed = asyncio.Event()
        return True


class Waker:
    """The wakes under way in this gateway, one per deployment."""

    def __init__(
        self, *, db: Database, timeout_s: float, poll_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db, self.timeout_s, self.poll_s, self.clock = db, timeout_s, poll_s, clock
        self.wakes: dict[str, Wake] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    async def hold(self, name: str, progress: Callable[[str], Awaitable[None]] | None = None) -> tuple[Route, Wake]:
        """Wait until ``name`` has a ready replica and return its route (and the wake, for its start time), telling
        ``progress`` each new phase. Raises ``WakeFailed`` when the pool refused the wake or ``timeout_s`` passed."""
        wake = self.wakes.get(name)
        if wake is None:
            wake = self.wakes[name] = Wake(name, started=self.clock())
            task = asyncio.create_task(self._watch(wake))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        wake.held += 1
        deadline = self.clock() + self.timeout_s
        told = ""
        try:
            while True:
                changed = wake.changed  # taken before the checks, so a change between them is not missed
                if wake.route is not None:
                    return wake.route, wake
                if wake.refused:
                    raise WakeFailed(wake.refused, code="wake_refused", retry_after=30)
                if progress is not None and wake.phase != told:
                    told = wake.phase
                    await progress(told)
                left = deadline - self.clock()
                if left > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), left)
                    continue
                raise WakeFailed(
                    f"deployment {name!r} is waking from zero replicas ({wake.phase}) and was not ready within "
                    f"{self.timeout_s:g} s; retry shortly",
                    code="waking",
                    retry_after=RETRY_AFTER_S,
                )
        finally:
            wake.held -= 1

    async def _watch(self, wake: Wake) -> None:
        """Ask the controller to wake it, then follow it until it is ready, refused, or nobody waits any more."""
        try:
            await asyncio.to_thread(deployments.request_wake, db=self.db, name=wake.name, at=utcnow())
            while True:
                wake.observe(await asyncio.to_thread(deployments.wake_view, db=self.db, name=wake.name))
                if wake.over or wake.held == 0:
                    return
                await asyncio.sleep(self.poll_s)
        except CoveError as exc:  # the database failed: the held requests are answered rather than left hanging
            log.warning("waking %s: %s", wake.name, exc)
            wake.refused = f"the gateway could not read deployment {wake.name!r}: {exc}"
            wake.changed.set()
        finally:
            if self.wakes.get(wake.name) is wake:
                del self.wakes[wake.name]

    def record_cold_start(self, wake: Wake) -> None:
        """Once per wake, from the first held request to the first token: kept on the deployment (off the loop)."""
        if wake.cold_start_recorded:
            return
        wake.cold_start_recorded = True
        seconds = self.clock() - wake.started
        task = asyncio.create_task(
            asyncio.to_thread(deployments.record_cold_start, db=self.db, name=wake.name, seconds=seconds)
        )
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def close(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        for task in list(self._watchers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
