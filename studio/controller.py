"""The controller: reconciles deployments' desired state onto their clusters' backends and writes back what it
observes.

Each pass reads every deployment as the ``WorkloadSpec`` its backend runs, holds back those whose image is still
being built (on backends that run images: ``image_gate``, pure), asks its cluster's backend to converge the rest,
derives the deployment's status from the replicas (pure), and records status changes and events. Deleted deployments
are removed once the backend reports nothing left; workloads no deployment asks for are stopped. Autoscaled
deployments get a replica count from the load the gateway reports (pure recommendation, with a scale-down
stabilization window so brief lulls do not thrash), unless their cluster scales them itself (an HPA), in which case
the count the cluster chose is recorded. Fine-tune jobs run as tasks (``studio.jobs``). Images with a Dockerfile are
built on the control plane's cluster, and every ``capacity_refresh_s`` each cluster's capacity is read into its
pools. Every ``gate_watch_s`` production versions due for re-evaluation are evaluated again and judged
(``studio.gate_watch``). The controller is the only caller of ``apply``/``delete``/``build``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime, timedelta

from studio import kvlog
from studio.backends.base import Backend, BuildSpec, WorkloadStatus
from studio.backends.clusters import Clusters, connect_cluster
from studio.bench_runs import BenchmarkRunner
from studio.db import Database, utcnow
from studio.errors import BackendUnavailable, CoveError, NotFound, QuotaExceeded
from studio.evaluation_runs import EvaluationRunner
from studio.gate_watch import GateWatch
from studio.jobs import JobRunner
from studio.leadership import Elector
from studio.models import Observed
from studio.sealing import studio_key
from studio.services import clusters, deployments, images, plans, pools, uptime
from studio.services.deployments import Desired
from studio.services.events import NewEvent, prune_events, record_events
from studio.settings import Settings
from studio.values import DEFAULT_CLUSTER, Autoscale, BuildStatus, Status
from studio.webhooks import Notifier

log = logging.getLogger(__name__)

SCALE_DOWN_WINDOW_S = 30.0
WINDOW_KEPT_S = 5.0  # how often the autoscaler's window is written as it moves on (a restart loses at most this)
# Log lines read for a ready replica's KV figures: a runtime logs them before it listens, a few hundred lines in.
FIGURES_LOG_LINES = 2000


def image_gate(desired: Desired) -> WorkloadStatus | None:
    """A deployment whose replicas run its image waits while the image is being built, and fails when it cannot be:
    the status to record instead of applying it, or None to go on."""
    spec = desired.spec
    if desired.image_build == BuildStatus.FAILED:
        return WorkloadStatus(spec.name, unavailable=f"its image could not be built: {desired.image_build_message}")
    if desired.image_build not in (BuildStatus.NONE, BuildStatus.READY):
        return WorkloadStatus(spec.name, waiting=f"waiting for its image {spec.image} to be built")
    return None


BUILD_STATUS = {
    "pending": BuildStatus.PENDING,
    "building": BuildStatus.BUILDING,
    "succeeded": BuildStatus.READY,
    "failed": BuildStatus.FAILED,
    "unavailable": BuildStatus.FAILED,
}


def derive_status(*, replicas: int, workload: WorkloadStatus, failure_threshold: int) -> Observed:
    """The deployment's status from its replicas: Ready if any answers; Failed when the runtime cannot run
    here or a replica failed ``failure_threshold`` starts in a row (with the last log lines); else
    Starting/Pending; Stopped at zero replicas."""
    ready = workload.ready

    def seen(status: Status, message: str = "") -> Observed:
        endpoints = [r.endpoint for r in ready if r.endpoint] if status == Status.READY else []
        count = len(ready) if status == Status.READY else 0
        return Observed(
            status=status, ready_replicas=count, endpoints=endpoints, message=message,
            upstream_model=workload.upstream_model, placed=[list(r.gpus) for r in workload.replicas if r.gpus],
        )  # fmt: skip

    if workload.unavailable:
        return seen(Status.FAILED, workload.unavailable)
    if workload.waiting:
        return seen(Status.PENDING, workload.waiting)
    if replicas == 0:
        left = len(workload.replicas)
        return seen(Status.STOPPED, f"stopping {left} replicas" if left else "scaled to zero")
    troubled = [r for r in workload.replicas if r.message and r.phase != "ready"]
    if ready:
        note = f"{len(ready)} of {replicas} replicas ready" if len(ready) < replicas else ""
        if note and troubled:
            note += f"; {troubled[0].message}"
        return seen(Status.READY, note)
    failing = [r for r in workload.replicas if r.failures >= failure_threshold]
    if failing:
        worst = failing[0]
        text = f"{worst.message}; {worst.failures} failed starts in a row, retrying with backoff"
        if worst.log_tail:
            text += "\nlast log lines:\n" + "\n".join(worst.log_tail)
        return seen(Status.FAILED, text)
    started = [r for r in workload.replicas if r.phase in ("starting", "backoff")]
    if started:
        return seen(Status.STARTING, troubled[0].message if troubled else "loading the model")
    return seen(Status.PENDING, troubled[0].message if troubled else "")


def sleep_or_wake(
    *, auto: Autoscale, replicas: int, inflight: float, last_active: datetime | None, wake_wanted: bool, now: datetime
) -> int | None:
    """Scale to zero for a deployment whose minimum is 0: 0 to put it to sleep (awake, nothing in flight, and no
    request, wake or change for ``auto.idle_s``) or keep it asleep; 1 to wake it (asleep, and the gateway asked, or
    holds requests for it); None to leave the count to ``recommend_replicas`` (floored at 1 while awake). Deployments
    with a minimum above 0 always get None."""
    if auto.min_replicas > 0:
        return None
    if replicas == 0:
        return 1 if wake_wanted or inflight > 0 else 0
    if inflight > 0:
        return None
    if last_active is None or (now - last_active).total_seconds() >= auto.idle_s:
        return 0
    return None


def recommend_replicas(*, inflight: float, target: float, lo: int, hi: int) -> int:
    """HPA's rule on requests in flight: enough replicas that each carries at most ``target``."""
    return min(hi, max(lo, math.ceil(inflight / target - 1e-9)))


class Controller:
    """Runs ``reconcile`` every ``settings.controller_interval_s`` on its own thread until stopped, while it leads.
    ``backend`` runs the default cluster; ``clusters`` (made from it when not given) finds the backend of every
    other."""

    def __init__(
        self,
        *,
        db: Database,
        backend: Backend | None = None,
        settings: Settings,
        load: Callable[[str], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        clusters: Clusters | None = None,
        wall: Callable[[], datetime] = utcnow,
        notifier: Notifier | None = None,
        leadership: Elector | None = None,
    ) -> None:
        """``backend`` or ``clusters`` (whose default backend is made when first used: on taking the lead, so a
        follower neither adopts nor stops the leader's local replicas). With ``leadership``, passes run only while it
        leads, and a pass stops between deployments as soon as it does not."""
        self.db, self.settings = db, settings
        if clusters is None:
            assert backend is not None, "a Controller needs a backend or clusters"
            made = backend
            clusters = Clusters(lambda: made, connect=connect_cluster(settings))
        self.clusters = clusters
        self.leadership = leadership
        self.key = studio_key(settings)
        self.load = load
        self.clock = clock
        self.wall = wall
        self.jobs = JobRunner(db=db, settings=settings)
        self.evaluations = EvaluationRunner(db=db, settings=settings)
        self.gate_watch = GateWatch(db=db, settings=settings, notifier=notifier or Notifier(), wall=wall)
        self.benchmarks = BenchmarkRunner(db=db, settings=settings)
        self._restarts: dict[tuple[str, int], int] = {}
        self._recommendations: dict[str, deque[tuple[float, int]]] = {}
        self._kept_windows: dict[str, tuple[tuple[int, ...], float]] = {}  # what was last written, and when
        self._capacity_read_at = -math.inf
        self._tasks_swept_at = -math.inf
        self._gate_watched_at = -math.inf
        self._refused_scale: dict[str, int] = {}  # deployment → the HPA's count the pool refused, said once
        self._measured: set[tuple[str, int]] = set()  # (deployment, generation) whose log was read for KV figures
        self._drained: dict[str, float] = {}  # deployment going to sleep → when its replicas may stop (clock)
        self._running: dict[str, int] = {}  # deployment → replicas its backend ran this pass (instance time)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- one pass

    def reconcile(self) -> None:
        self.clusters.update(clusters.connections(db=self.db, key=self.key))
        wanted = deployments.desired_state(db=self.db)
        on: dict[str, list[Desired]] = defaultdict(list)
        for desired in wanted:
            on[desired.cluster].append(desired)
        reachable: dict[str, Backend] = {}
        for cluster in dict.fromkeys([*self.clusters.names(), *on]):
            try:
                backend = self.clusters.get(cluster)
                backend.observe()
            except CoveError as exc:
                for desired in on[cluster]:
                    self._unreachable(desired, exc)
                continue
            for desired in on[cluster]:
                if not self.leading:
                    return  # another server leads now: write nothing more
                try:
                    self._reconcile_one(backend, desired)
                except (BackendUnavailable, NotFound) as exc:
                    self._unreachable(desired, exc)
                except CoveError as exc:
                    log.warning("reconciling %s failed: %s", desired.name, exc)
                except OSError as exc:  # a full disk (a log or state file unwritten) costs one deployment, not a pass
                    log.warning("reconciling %s failed: %s", desired.name, exc)
            if not self.leading:
                return
            try:
                names = {d.name for d in on[cluster]}
                for orphan in sorted(backend.names() - names):
                    log.info("stopping %s on cluster %s: no deployment asks for it", orphan, cluster)
                    backend.delete(orphan)
            except CoveError as exc:
                log.warning("cluster %s: %s", cluster, exc)
            reachable[cluster] = backend
        self._record_uptime()
        self._run_jobs(reachable)
        self._build_images()
        if self.clock() - self._capacity_read_at >= self.settings.capacity_refresh_s:
            self._capacity_read_at = self.clock()
            self._read_capacity()
        if self.clock() - self._gate_watched_at >= self.settings.gate_watch_s:
            self._gate_watched_at = self.clock()
            self.gate_watch.run()

    def _record_uptime(self) -> None:
        """The replicas each deployment reconciled this pass ran, as instance time (``services.uptime``): a failure
        to write it is logged, and the next pass writes the same spans."""
        running, self._running = self._running, {}
        try:
            uptime.record(db=self.db, running=running, now=self.wall())
        except CoveError as exc:
            log.warning("recording instance time: %s", exc)

    def _unreachable(self, desired: Desired, exc: CoveError) -> None:
        """Its cluster cannot be used: say so on the deployment, keeping the status last seen."""
        message = f"cluster {desired.cluster}: {exc}"
        if desired.observed.message == message:
            return  # said already: no log line or event on every pass
        log.warning("reconciling %s: %s", desired.name, message)
        observed = desired.observed.model_copy(update={"message": message})
        events = [NewEvent("Unreachable", message, "Warning")]
        deployments.record_observed(
            db=self.db, name=desired.name, generation=desired.generation, observed=observed, events=events
        )

    def _run_jobs(self, backends: dict[str, Backend]) -> None:
        """Fine-tune jobs, evaluations and benchmark runs on the clusters that answered; every
        ``capacity_refresh_s``, tasks no unfinished job owns (one whose end could not be cleaned up) are stopped:
        listing them costs a read of each cluster."""
        owned = self.jobs.reconcile(backends) | self.evaluations.reconcile(backends)
        owned |= self.benchmarks.reconcile(backends)
        if self.clock() - self._tasks_swept_at < self.settings.capacity_refresh_s:
            return
        self._tasks_swept_at = self.clock()
        for cluster, backend in backends.items():
            try:
                for orphan in sorted(backend.tasks() - owned):
                    log.info("stopping task %s on cluster %s: no fine-tune asks for it", orphan, cluster)
                    backend.stop_task(orphan)
            except CoveError as exc:
                log.warning("cluster %s: %s", cluster, exc)

    def _build_images(self) -> None:
        """Images with a Dockerfile are built on the control plane's own cluster."""
        for build in images.builds_wanted(db=self.db):
            spec = BuildSpec(build.label, build.dockerfile, build.destination, build.attempt)
            try:
                state = self.clusters.default.build(spec)
            except CoveError as exc:
                log.warning("building image %s: %s", build.label, exc)
                continue
            images.record_build(
                db=self.db, name=build.name, version=build.version, status=BUILD_STATUS[state.phase],
                message=state.message,
            )  # fmt: skip

    def _read_capacity(self) -> None:
        """Each cluster's capacity into its pools (the machine's own is read at start); registered clusters record
        whether they answered."""
        local = self.settings.backend == "local"
        for cluster in self.clusters.names()[1:] if local else self.clusters.names():
            try:
                found = self.clusters.get(cluster).capacity()
                message = "; ".join(pools.sync_detected_pools(db=self.db, cluster=cluster, detected=found))
            except CoveError as exc:
                message = str(exc)
            if cluster != DEFAULT_CLUSTER:
                clusters.record_check(db=self.db, name=cluster, message=message)
            elif message:
                log.warning("reading the capacity of this cluster: %s", message)

    def _reconcile_one(self, backend: Backend, desired: Desired) -> None:
        if desired.deleting:
            self._running[desired.name] = 0  # asked to stop: billed no longer
            if backend.delete(desired.name):
                deployments.finish_delete(db=self.db, name=desired.name)
                self._forget(desired.name)
            return
        spec = desired.spec
        if self._draining(desired):  # going to sleep: gateways stop sending it requests before its replica stops
            self._scale(backend, desired, scaled_to=None)
            return
        gated = image_gate(desired) if backend.runs_images else None
        workload = gated or backend.apply(spec)
        # instance time: every replica that holds its share of the pool (one waiting for a node holds none)
        self._running[desired.name] = sum(1 for r in workload.replicas if r.phase != "pending")
        observed = derive_status(
            replicas=spec.replicas, workload=workload, failure_threshold=self.settings.failure_threshold
        )
        events = self._events(desired, observed, workload)
        if observed != desired.observed or events:
            deployments.record_observed(
                db=self.db, name=desired.name, generation=desired.generation, observed=observed, events=events
            )
        if events:  # a replica in a crash loop adds an event per restart: keep the newest few hundred
            prune_events(db=self.db, kind=deployments.KIND, name=desired.name)
        if observed.status == Status.READY and (desired.name, desired.generation) not in self._measured:
            self._measure(backend, desired)
        self._scale(backend, desired, scaled_to=workload.scaled_to)

    def _scale(self, backend: Backend, desired: Desired, *, scaled_to: int | None) -> None:
        spec = desired.spec
        if spec.autoscale and backend.autoscales:
            if not self._zero_step(desired):  # the cluster's HPA scales from 1 up; 0 ↔ 1 is the controller's
                self._record_scale(desired, scaled_to)
        elif spec.autoscale and self.load is not None:
            self._autoscale(desired)

    def _draining(self, desired: Desired) -> bool:
        """A deployment put to sleep is first taken out of the gateways' routes, and its replicas are stopped only
        once every gateway has re-read them (two route refreshes): a request that arrives meanwhile reaches a live
        replica, or is held for a wake, never sent to a stopped one. A wake before then keeps the running replica."""
        name, spec = desired.name, desired.spec
        if spec.replicas != 0 or spec.autoscale is None or spec.autoscale.min_replicas != 0:
            self._drained.pop(name, None)
            return False
        if desired.observed.endpoints:  # still routed: withdraw it now, stop it later
            withdrawn = desired.observed.model_copy(
                update={"status": Status.STOPPED, "ready_replicas": 0, "endpoints": [], "message": "going to sleep"}
            )
            deployments.record_observed(
                db=self.db, name=name, generation=desired.generation, observed=withdrawn, events=[]
            )
            self._drained[name] = self.clock() + 2 * self.settings.routes_refresh_s
            return True
        until = self._drained.get(name)
        if until is not None and self.clock() < until:
            return True
        self._drained.pop(name, None)
        return False

    def _measure(self, backend: Backend, desired: Desired) -> None:
        """Once per generation, when it turns ready: what its runtime logged of its KV cache (``studio.kvlog``),
        kept on the deployment beside the plan's prediction. A log that says nothing (not vLLM or SGLang) is not
        read again until the deployment changes."""
        self._measured.add((desired.name, desired.generation))
        figures = kvlog.read_figures(backend.logs(desired.name, tail=FIGURES_LOG_LINES))
        if figures is not None:
            plans.record_kv_observed(db=self.db, name=desired.name, figures=figures)

    def _events(self, desired: Desired, observed: Observed, workload: WorkloadStatus) -> list[NewEvent]:
        events = []
        if observed.status != desired.observed.status:
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
        auto, current = desired.spec.autoscale, desired.spec.replicas
        assert auto is not None
        assert self.load is not None
        inflight = self.load(desired.name)
        zero = sleep_or_wake(
            auto=auto, replicas=current, inflight=inflight, last_active=desired.last_active,
            wake_wanted=desired.wake_wanted, now=self.wall(),
        )  # fmt: skip
        if zero is not None:
            self._sleep_or_wake(desired, zero)
            return
        now = self.clock()
        history = self._recommendations.get(desired.name)
        if history is None:  # first pass since this controller started leading: the window it was left
            history = self._recommendations[desired.name] = self._restore_window(desired)
        recommended = recommend_replicas(
            inflight=inflight, target=auto.target_inflight, lo=max(auto.min_replicas, 1), hi=auto.max_replicas
        )
        # only recommendations no later one matches or beats can be a window's highest: the rest are dropped
        while history and history[-1][1] <= recommended:
            history.pop()
        history.append((now, recommended))
        while history and history[0][0] < now - SCALE_DOWN_WINDOW_S:
            history.popleft()
        self._keep_window(desired.name, history)
        # up at once; down only to the highest recommendation of the last window
        target = history[0][1]
        if target == current:
            return
        reason = f"{inflight:g} requests in flight, target {auto.target_inflight:g} per replica"
        # scaling up takes as many replicas as the pool has room for, up to the target
        for count in range(target, current, -1) if target > current else [target]:
            try:
                deployments.autoscale_to(
                    db=self.db,
                    name=desired.name,
                    replicas=count,
                    reason=reason if count == target else f"{reason}; {target} wanted, the pool has room for {count}",
                )
                return
            except QuotaExceeded as exc:
                refused = exc
            except CoveError as exc:
                log.warning("autoscaling %s to %d: %s", desired.name, count, exc)
                return
        log.warning("autoscaling %s: no room for another replica: %s", desired.name, refused)

    def _restore_window(self, desired: Desired) -> deque[tuple[float, int]]:
        """The window the last controller kept (``Desired.scale_window``), on this controller's clock."""
        wall, now = self.wall(), self.clock()
        return deque((now - (wall - at).total_seconds(), replicas) for at, replicas in desired.scale_window)

    def _keep_window(self, name: str, history: deque[tuple[float, int]]) -> None:
        """Write the window when its counts change, and every ``WINDOW_KEPT_S`` as it moves on: a restart loses at
        most that much of it."""
        counts = tuple(r for _, r in history)
        kept = self._kept_windows.get(name)
        if kept is not None and kept[0] == counts and self.clock() - kept[1] < WINDOW_KEPT_S:
            return
        wall, now = self.wall(), self.clock()
        window = [(wall - timedelta(seconds=now - at), replicas) for at, replicas in history]
        try:
            deployments.keep_scale_window(db=self.db, name=name, window=window)
        except CoveError as exc:  # the window is kept in memory all the same; only a restart would lose it
            log.warning("keeping the autoscaling window of %s: %s", name, exc)
            return
        self._kept_windows[name] = (counts, now)

    def _zero_step(self, desired: Desired) -> bool:
        """For a deployment its cluster autoscales: put it to sleep or wake it when ``sleep_or_wake`` says so;
        whether it did (or it sleeps on), so the HPA's count is not recorded over it."""
        auto = desired.spec.autoscale
        assert auto is not None
        zero = sleep_or_wake(
            auto=auto, replicas=desired.spec.replicas, inflight=self.load(desired.name) if self.load else 0.0,
            last_active=desired.last_active, wake_wanted=desired.wake_wanted, now=self.wall(),
        )  # fmt: skip
        if zero is None:
            return False
        self._sleep_or_wake(desired, zero)
        return True

    def _sleep_or_wake(self, desired: Desired, count: int) -> None:
        """Put a minimum-0 deployment to sleep (its claim on the pool is given back with its replicas) or wake it
        (admitted like any scale-up; a refusal is written for the gateway, which answers its held requests with it)."""
        if count == desired.spec.replicas:
            return
        assert desired.spec.autoscale is not None
        if self._recommendations.pop(desired.name, None):  # awake again, it starts from a clean window
            self._keep_window(desired.name, deque())
        reason = f"no request for {desired.spec.autoscale.idle_s:g} s: sleeping" if count == 0 else "a request woke it"
        try:
            deployments.autoscale_to(db=self.db, name=desired.name, replicas=count, reason=reason)
        except QuotaExceeded as exc:
            text = f"no room in pool {desired.spec.pool!r} to wake it: {exc}"
            if desired.wake_refused != text:  # said once, not on every pass
                log.warning("%s: %s", desired.name, text)
                deployments.refuse_wake(db=self.db, name=desired.name, reason=text)
                record_events(
                    db=self.db,
                    kind=deployments.KIND,
                    name=desired.name,
                    events=[NewEvent("WakeRefused", text, "Warning")],
                )
        except CoveError as exc:
            log.warning("scaling %s to %d: %s", desired.name, count, exc)

    def _record_scale(self, desired: Desired, scaled_to: int | None) -> None:
        """The cluster's autoscaler chose a replica count: record it, so the pool's admission counts it."""
        if scaled_to is None or scaled_to == desired.spec.replicas:
            self._refused_scale.pop(desired.name, None)
            return
        try:
            deployments.autoscale_to(
                db=self.db, name=desired.name, replicas=scaled_to, reason="by its HorizontalPodAutoscaler"
            )
        except CoveError as exc:  # said once per count, not on every pass
            if self._refused_scale.get(desired.name) != scaled_to:
                self._refused_scale[desired.name] = scaled_to
                text = f"its HorizontalPodAutoscaler chose {scaled_to} replicas, which the pool cannot admit: {exc}"
                log.warning("%s: %s", desired.name, text)
                event = NewEvent("ScaleRefused", text, "Warning")
                record_events(db=self.db, kind=deployments.KIND, name=desired.name, events=[event])

    def _forget(self, name: str) -> None:
        self._recommendations.pop(name, None)
        self._kept_windows.pop(name, None)
        self._refused_scale.pop(name, None)
        self._measured = {m for m in self._measured if m[0] != name}
        for key in [k for k in self._restarts if k[0] == name]:
            del self._restarts[key]

    # ------------------------------------------------------------------------------------------- the loop

    @property
    def backend(self) -> Backend:
        """The default cluster's backend (made on first use)."""
        return self.clusters.default

    @property
    def leading(self) -> bool:
        return self.leadership is None or self.leadership.leading

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="cove-controller", daemon=True)
        self._thread.start()

    def stop(self, *, stop_workloads: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.gate_watch.close()
        self.clusters.close(stop_workloads=stop_workloads)

    def _step_down(self) -> None:
        """Not leading (any more): let go of the backends, leaving every workload running for the leader, and forget
        what was learnt while leading (a later lead starts from what the database and the clusters say)."""
        self.clusters.close(stop_workloads=False)
        self._restarts.clear()
        self._recommendations.clear()
        self._kept_windows.clear()
        self._refused_scale.clear()
        self._measured.clear()

    def _loop(self) -> None:
        led = False
        while not self._stop.is_set():
            if not self.leading:
                if led:
                    self._step_down()
                    led = False
                self._stop.wait(self.settings.controller_interval_s)
                continue
            led = True
            try:
                self.reconcile()
            except CoveError as exc:
                log.error("reconcile pass failed: %s", exc)
            except Exception:  # the loop must outlive any one bad pass; the traceback is logged
                log.exception("reconcile pass failed")
            self._stop.wait(self.settings.controller_interval_s)
