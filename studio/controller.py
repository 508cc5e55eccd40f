"""The controller: reconciles deployments' desired state onto a backend and writes back what it observes.

Each pass reads every deployment, builds its ``WorkloadSpec`` (pure), asks the backend to converge, derives the
deployment's status from the replicas (pure), and records status changes and events. Deleted deployments are
removed once the backend reports nothing left; workloads no deployment asks for are stopped. Autoscaled
deployments get a replica count from the load the gateway reports (pure recommendation, with a scale-down
stabilization window so brief lulls do not thrash). The controller is the only caller of ``apply``/``delete``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from studio.backends.base import Backend, WorkloadSpec, WorkloadStatus
from studio.db import Database
from studio.errors import CoveError, QuotaExceeded
from studio.models import Status
from studio.services import deployments
from studio.services.deployments import Desired, Observed
from studio.services.events import NewEvent, prune_events
from studio.settings import Settings

log = logging.getLogger(__name__)

SCALE_DOWN_WINDOW_S = 30.0


def workload_spec(desired: Desired) -> WorkloadSpec:
    return WorkloadSpec(
        name=desired.name,
        runtime=desired.runtime,
        model=desired.model,
        model_revision=desired.model_revision,
        model_path=desired.model_path,
        image=desired.image,
        health_path=desired.health_path,
        local_command=desired.local_command,
        args=desired.runtime_args,
        resources=desired.resources,
        replicas=desired.replicas,
        pool=desired.pool,
        node_selector=desired.node_selector,
        tolerations=desired.tolerations,
    )


def derive_status(*, replicas: int, workload: WorkloadStatus, failure_threshold: int) -> Observed:
    """The deployment's status from its replicas: Ready if any answers; Failed when the runtime cannot run
    here or a replica failed ``failure_threshold`` starts in a row (with the last log lines); else
    Starting/Pending; Stopped at zero replicas."""
    ready = workload.ready
    endpoints = tuple(r.endpoint for r in ready if r.endpoint)
    upstream = workload.upstream_model
    if workload.unavailable:
        return Observed(Status.FAILED, 0, (), workload.unavailable, upstream)
    if replicas == 0:
        left = len(workload.replicas)
        return Observed(Status.STOPPED, 0, (), f"stopping {left} replicas" if left else "scaled to zero", upstream)
    troubled = [r for r in workload.replicas if r.message and r.phase != "ready"]
    if ready:
        note = f"{len(ready)} of {replicas} replicas ready" if len(ready) < replicas else ""
        if note and troubled:
            note += f"; {troubled[0].message}"
        return Observed(Status.READY, len(ready), endpoints, note, upstream)
    failing = [r for r in workload.replicas if r.failures >= failure_threshold]
    if failing:
        worst = failing[0]
        text = f"{worst.message}; {worst.failures} failed starts in a row, retrying with backoff"
        if worst.log_tail:
            text += "\nlast log lines:\n" + "\n".join(worst.log_tail)
        return Observed(Status.FAILED, 0, (), text, upstream)
    started = [r for r in workload.replicas if r.phase in ("starting", "backoff")]
    if started:
        return Observed(Status.STARTING, 0, (), troubled[0].message if troubled else "loading the model", upstream)
    return Observed(Status.PENDING, 0, (), troubled[0].message if troubled else "", upstream)


def recommend_replicas(*, inflight: float, target: float, lo: int, hi: int) -> int:
    """HPA's rule on requests in flight: enough replicas that each carries at most ``target``."""
    return min(hi, max(lo, math.ceil(inflight / target - 1e-9)))


class Controller:
    """Runs ``reconcile`` every ``settings.controller_interval_s`` on its own thread until stopped."""

    def __init__(
        self,
        *,
        db: Database,
        backend: Backend,
        settings: Settings,
        load: Callable[[str], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.backend, self.settings = db, backend, settings
        self.load = load
        self.clock = clock
        self._restarts: dict[tuple[str, int], int] = {}
        self._recommendations: dict[str, deque[tuple[float, int]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- one pass

    def reconcile(self) -> None:
        wanted = deployments.desired_state(db=self.db)
        for desired in wanted:
            try:
                self._reconcile_one(desired)
            except CoveError as exc:
                log.warning("reconciling %s failed: %s", desired.name, exc)
        names = {d.name for d in wanted}
        for orphan in sorted(self.backend.names() - names):
            log.info("stopping %s: no deployment asks for it", orphan)
            self.backend.delete(orphan)

    def _reconcile_one(self, desired: Desired) -> None:
        if desired.deleting:
            if self.backend.delete(desired.name):
                deployments.finish_delete(db=self.db, name=desired.name)
                self._forget(desired.name)
            return
        workload = self.backend.apply(workload_spec(desired))
        observed = derive_status(
            replicas=desired.replicas, workload=workload, failure_threshold=self.settings.failure_threshold
        )
        events = self._events(desired, observed, workload)
        changed = (
            observed.status.value,
            observed.ready_replicas,
            observed.endpoints,
            observed.message,
            observed.upstream_model,
        ) != (desired.status, desired.ready_replicas, desired.endpoints, desired.message, desired.upstream_model)
        if changed or events:
            deployments.record_observed(
                db=self.db, name=desired.name, generation=desired.generation, observed=observed, events=events
            )
        if events:  # a replica in a crash loop adds an event per restart: keep the newest few hundred
            prune_events(db=self.db, kind=deployments.KIND, name=desired.name)
        if desired.autoscale and self.load is not None:
            self._autoscale(desired)

    def _events(self, desired: Desired, observed: Observed, workload: WorkloadStatus) -> list[NewEvent]:
        events = []
        if observed.status.value != desired.status:
            warning = observed.status == Status.FAILED
            first_line = observed.message.splitlines()[0] if observed.message else ""
            events.append(
                NewEvent(
                    observed.status.value,
                    first_line or observed.status.value.lower(),
                    "Warning" if warning else "Normal",
                )
            )
        for replica in workload.replicas:
            key = (desired.name, replica.index)
            seen = self._restarts.get(key)
            if seen is not None and replica.restarts > seen:
                events.append(NewEvent("BackOff", replica.message or f"replica {replica.index} restarting", "Warning"))
            self._restarts[key] = replica.restarts
        return events

    def _autoscale(self, desired: Desired) -> None:
        auto = desired.autoscale
        assert auto is not None
        assert self.load is not None
        inflight = self.load(desired.name)
        now = self.clock()
        history = self._recommendations.setdefault(desired.name, deque())
        history.append(
            (
                now,
                recommend_replicas(
                    inflight=inflight, target=auto.target_inflight, lo=auto.min_replicas, hi=auto.max_replicas
                ),
            )
        )
        while history and history[0][0] < now - SCALE_DOWN_WINDOW_S:
            history.popleft()
        # up at once; down only to the highest recommendation of the last window
        target = max(r for _, r in history)
        if target == desired.replicas:
            return
        reason = f"{inflight:g} requests in flight, target {auto.target_inflight:g} per replica"
        # scaling up takes as many replicas as the pool has room for, up to the target
        for count in range(target, desired.replicas, -1) if target > desired.replicas else [target]:
            try:
                deployments.scale_deployment(
                    db=self.db,
                    name=desired.name,
                    replicas=count,
                    autoscaler=True,
                    reason=reason if count == target else f"{reason}; {target} wanted, the pool has room for {count}",
                )
                return
            except QuotaExceeded as exc:
                refused = exc
            except CoveError as exc:
                log.warning("autoscaling %s to %d: %s", desired.name, count, exc)
                return
        log.warning("autoscaling %s: no room for another replica: %s", desired.name, refused)

    def _forget(self, name: str) -> None:
        self._recommendations.pop(name, None)
        for key in [k for k in self._restarts if k[0] == name]:
            del self._restarts[key]

    # ------------------------------------------------------------------------------------------- the loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="cove-controller", daemon=True)
        self._thread.start()

    def stop(self, *, stop_workloads: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.backend.close(stop_workloads=stop_workloads)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except CoveError as exc:
                log.error("reconcile pass failed: %s", exc)
            except Exception:  # the loop must outlive any one bad pass; the traceback is logged
                log.exception("reconcile pass failed")
            self._stop.wait(self.settings.controller_interval_s)
