"""LocalBackend: model servers as supervised processes on this machine.

Each replica is a process in its own session (so a terminal's Ctrl-C reaches Cove, not the runtimes, and Cove
stops them in order), with its own port and log file. ``apply`` is called on every reconcile pass and does a
kubelet's work synchronously: start what is missing, probe health, restart crashed replicas with exponential
backoff, kill replicas that never become ready, and replace replicas whose spec changed.

Fine-tunes run as supervised run-to-completion tasks (``studio.backends.tasks``).

Bookkeeping (pid, process start time, port) lives in ``COVE_HOME/runs/<workload>/<index>.json``; a new backend
adopts processes whose pid and start time still match, so a restarted controller neither loses nor duplicates
replicas. Time comes from an injected clock so tests can jump; starting a process and probing its health are
injected too (``spawn``, ``probe``), so tests can play runtimes without starting any.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from studio import machine
from studio.backends.base import (
    BuildSpec,
    BuildState,
    Phase,
    ReplicaStatus,
    TaskSpec,
    TaskState,
    WorkloadSpec,
    WorkloadStatus,
)
from studio.backends.environment import child_env
from studio.backends.logfiles import tail_lines
from studio.backends.tasks import LocalTasks
from studio.errors import CoveError
from studio.machine import Gpu
from studio.pools import Claim, place
from studio.runtimes import Launch, local_availability, local_launch, upstream_model
from studio.settings import Settings
from studio.values import PoolBase, Resources

log = logging.getLogger(__name__)

LOG_TAIL = 20
MAX_LOG_BYTES = 20 * 1024 * 1024
PROBE_THREADS = 16  # health probes run at once (each waits on the network, not the CPU)
PROBE_FAILURES_UNREADY = 3  # consecutive failed probes before a ready replica is taken out of rotation
HEADER = "--- cove "  # starts the line the backend writes to a replica's log at each start
# Children deliberately left running by close(stop_workloads=False): kept referenced so that Python does not
# report them as leaked when their Popen objects would otherwise be collected.
_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []


def backoff_s(failures: int) -> float:
    """Delay before the next start after ``failures`` consecutive failures: 1, 2, 4, … capped at 60 s."""
    return float(min(60, 2 ** max(0, failures - 1)))


def last_attempt(lines: list[str]) -> list[str]:
    """The lines written since the last start (the backend writes a ``--- cove`` header at each start)."""
    starts = [i for i, line in enumerate(lines) if line.startswith(HEADER)]
    return lines[starts[-1] + 1 :] if starts else lines


def log_tail(settings: Settings, name: str, *, tail: int = 100) -> list[str]:
    """The last lines of each replica's log, prefixed with the replica's index. Reads files only."""
    lines: list[str] = []
    for path in sorted((settings.logs_dir / name).glob("replica-*.log")):
        index = path.stem.removeprefix("replica-")
        lines += [f"[{index}] {line}" for line in tail_lines(path, tail)]
    return lines


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _http_probe(host: str, port: int, path: str, timeout: float = 2.0) -> str:
    """'' when GET path answers 2xx, else what went wrong."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
        return "" if 200 <= status < 300 else f"GET {path} answered {status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"GET {path}: {exc}"
    finally:
        conn.close()


@dataclass
class _Replica:
    workload: str
    index: int
    fingerprint: str
    upstream_model: str
    state_path: Path
    log_path: Path
    phase: Phase = "pending"
    port: int | None = None
    pid: int | None = None
    create_time: float | None = None
    proc: subprocess.Popen[bytes] | None = None  # None for adopted processes
    gpu_ids: tuple[int, ...] = ()
    whole_gpus: bool = True  # it holds its GPUs whole (a memory slice shares its one GPU with other slices)
    gpu_memory_mib: int = 0  # its memory slice, when not whole
    started_at: float = 0.0
    next_start: float = 0.0
    stop_deadline: float = 0.0
    restarts: int = 0
    failures: int = 0
    probe_failures: int = 0
    message: str = ""
    log_tail: tuple[str, ...] = ()
    adopted: bool = False
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str | None:
        return None if self.port is None else f"http://{self.host}:{self.port}"


class LocalBackend:
    """Runs workloads as local processes; see the module docstring."""

    autoscales = False  # the controller scales local workloads
    runs_images = False  # replicas are local processes (a custom image's local command), not its container

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        python: str = sys.executable,
        gpus: tuple[Gpu, ...] | None = None,
        spawn: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
        probe: Callable[[str, int, str], str] | None = None,
    ) -> None:
        """``spawn`` starts a replica's process (``subprocess.Popen``'s arguments); ``probe(host, port, path)`` says
        what is wrong with its health endpoint, '' when it answers (an HTTP GET within RUNTIME_PROBE_TIMEOUT_S)."""
        self.settings = settings
        self.clock = clock
        self.python = python
        self.gpus = machine.gpus() if gpus is None else gpus
        self.spawn = spawn
        self.probe = probe or functools.partial(_http_probe, timeout=settings.runtime_probe_timeout_s)
        self._probing: dict[tuple[str, int, int | None], Future[str]] = {}  # probes started by ``observe``
        self._probes: ThreadPoolExecutor | None = None
        self._workloads: dict[str, dict[int, _Replica]] = {}
        self._health_paths: dict[str, str] = {}
        settings.ensure_dirs()
        self.task_runner = LocalTasks(settings, clock=clock)
        self._adopt()

    # ------------------------------------------------------------------------------------------- protocol verbs

    def observe(self) -> None:
        """Probe every running replica's health at once, for this pass's ``apply``: a pass waits at most one
        RUNTIME_PROBE_TIMEOUT_S however many replicas hang, and a probe still unanswered after it counts as failed
        (a replica that hangs is taken out of rotation, then restarted, as one that refuses)."""
        running = [
            r for reps in self._workloads.values() for r in reps.values()
            if r.phase in ("starting", "ready") and r.port and self._exit_code(r) is None
        ]  # fmt: skip
        keys = {(r.workload, r.index, r.pid) for r in running}
        for gone in [k for k, f in self._probing.items() if k not in keys and f.done()]:
            del self._probing[gone]  # its replica exited or was replaced before its result was read
        if not running:
            return
        if self._probes is None:
            self._probes = ThreadPoolExecutor(max_workers=PROBE_THREADS, thread_name_prefix="cove-probe")
        for replica in running:
            key = (replica.workload, replica.index, replica.pid)
            if key not in self._probing:  # one still running from an earlier pass is not started again
                path = self._health_paths.get(replica.workload, "/health")
                self._probing[key] = self._probes.submit(self.probe, replica.host, replica.port or 0, path)
        wait(list(self._probing.values()), timeout=self.settings.runtime_probe_timeout_s + 0.5)

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        replicas = self._workloads.setdefault(spec.name, {})
        self._health_paths[spec.name] = spec.health_path
        unavailable = local_availability(spec, gpus_on_machine=len(self.gpus))
        wanted = 0 if unavailable else spec.replicas
        for index in range(wanted):
            replica = replicas.get(index)
            if replica is None:
                replicas[index] = self._new_replica(spec, index)
            elif replica.fingerprint != spec.fingerprint and replica.phase != "terminating":
                log.info("%s/%d: spec changed, replacing", spec.name, index)
                self._terminate(replica)
        for index, replica in replicas.items():
            if index >= wanted and replica.phase != "terminating":
                self._terminate(replica)
        self._sync(spec.name, spec)
        return self._status(spec.name, upstream_model(spec), unavailable)

    def delete(self, name: str) -> bool:
        for replica in self._workloads.get(name, {}).values():
            if replica.phase != "terminating":
                self._terminate(replica)
        self._sync(name, None)
        if self._workloads.get(name):
            return False
        self._workloads.pop(name, None)
        self._health_paths.pop(name, None)
        shutil.rmtree(self.settings.runs_dir / name, ignore_errors=True)
        return True

    def names(self) -> set[str]:
        return set(self._workloads)

    def logs(self, name: str, *, tail: int = 100) -> list[str]:
        return log_tail(self.settings, name, tail=tail)

    def capacity(self) -> list[PoolBase]:
        return [machine.capacity(self.gpus)]

    def build(self, spec: BuildSpec) -> BuildState:
        return BuildState(
            "unavailable",
            "images are built in a Kubernetes cluster (a Kaniko Job), and this Cove runs local processes: build it "
            "with your container tool and push it, or run Cove with COVE_BACKEND=kubernetes",
        )

    # Tasks (fine-tunes): supervised processes (studio.backends.tasks).
    def run_task(self, spec: TaskSpec) -> TaskState:
        return self.task_runner.run(spec)

    def stop_task(self, name: str) -> bool:
        return self.task_runner.stop(name)

    def tasks(self) -> set[str]:
        return self.task_runner.names()

    def task_logs(self, name: str, *, tail: int = 100) -> list[str]:
        return self.task_runner.logs(name, tail=tail)

    def close(self, *, stop_workloads: bool) -> None:
        if self._probes is not None:
            self._probes.shutdown(wait=False, cancel_futures=True)
            self._probes = None
            self._probing.clear()
        self.task_runner.close(stop_tasks=stop_workloads)
        if not stop_workloads:  # the replicas run on; the next backend adopts them from their state files
            _LEFT_RUNNING.extend(r.proc for reps in self._workloads.values() for r in reps.values() if r.proc)
            self._workloads.clear()
            return
        victims = [r for reps in self._workloads.values() for r in reps.values()]
        procs = []
        for replica in victims:
            proc = self._process(replica)
            if proc is not None:
                self._signal(replica, signal.SIGTERM)
                procs.append(proc)
        _, alive = psutil.wait_procs(procs, timeout=self.settings.runtime_stop_grace_s)
        for proc in alive:
            with contextlib.suppress(psutil.Error, OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
        for replica in victims:
            if replica.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    replica.proc.wait(timeout=1)
            replica.state_path.unlink(missing_ok=True)
        self._workloads.clear()

    # ------------------------------------------------------------------------------------------- replicas

    def _new_replica(self, spec: WorkloadSpec, index: int) -> _Replica:
        return _Replica(
            workload=spec.name,
            index=index,
            fingerprint=spec.fingerprint,
            upstream_model=upstream_model(spec),
            state_path=self.settings.runs_dir / spec.name / f"{index}.json",
            log_path=self.settings.logs_dir / spec.name / f"replica-{index}.log",
            next_start=self.clock(),
        )

    def _sync(self, name: str, spec: WorkloadSpec | None) -> None:
        replicas = self._workloads.get(name, {})
        now = self.clock()
        for index, replica in list(replicas.items()):
            if replica.phase == "terminating":
                if self._exit_code(replica) is not None:
                    replica.state_path.unlink(missing_ok=True)
                    del replicas[index]
                elif now >= replica.stop_deadline:
                    self._signal(replica, signal.SIGKILL)
                continue
            if replica.phase in ("pending", "backoff"):
                if spec is not None and now >= replica.next_start:
                    self._start(replica, spec)
                continue
            code = self._exit_code(replica)
            if code is not None:
                self._on_exit(replica, code)
                continue
            self._probe(replica, now)

    def _start(self, replica: _Replica, spec: WorkloadSpec) -> None:
        now = self.clock()
        gpu_ids = self._assign_gpus(spec, replica)
        if gpu_ids is None:
            replica.message = "waiting for a free GPU on this machine"
            replica.next_start = now + 1
            return
        host = self.settings.runtime_host
        try:
            port = free_port(host)
            launch = local_launch(
                spec, host=host, port=port, python=self.python, models_dir=self.settings.models_dir, gpu_ids=gpu_ids
            )
        except (OSError, CoveError) as exc:
            self._fail_start(replica, f"cannot start: {exc}")
            return
        try:
            log_file = self._open_log(replica, launch)
        except OSError as exc:  # a full disk fails this replica's start, not the reconcile pass
            self._fail_start(replica, f"cannot write its log {replica.log_path}: {exc.strerror or exc}")
            return
        with log_file:
            try:
                proc = self.spawn(
                    launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=child_env(os.environ, launch.env),  # see environment: no COVE_* settings
                    start_new_session=True,
                    cwd=self.settings.home,
                )
            except OSError as exc:
                self._fail_start(replica, f"cannot start {launch.argv[0]}: {exc.strerror or exc}")
                return
        replica.proc, replica.pid, replica.port, replica.gpu_ids = proc, proc.pid, port, gpu_ids
        replica.whole_gpus = not spec.resources.gpu_memory_mib
        replica.gpu_memory_mib = spec.resources.gpu_memory_mib
        replica.host = host
        replica.create_time = _create_time(proc.pid)
        replica.phase, replica.started_at, replica.probe_failures, replica.adopted = "starting", now, 0, False
        self._save(replica)
        log.info("%s/%d: started pid %d on port %d", replica.workload, replica.index, proc.pid, port)

    def _open_log(self, replica: _Replica, launch: Launch) -> IO[bytes]:
        """The replica's log, rotated when large, opened for appending with this start's header written."""
        replica.log_path.parent.mkdir(parents=True, exist_ok=True)
        if replica.log_path.exists() and replica.log_path.stat().st_size > MAX_LOG_BYTES:
            replica.log_path.replace(replica.log_path.with_suffix(".log.1"))
        log_file = replica.log_path.open("ab")
        try:
            self._write_header(log_file, replica, launch)
        except OSError:
            log_file.close()
            raise
        return log_file

    def _write_header(self, log_file: IO[bytes], replica: _Replica, launch: Launch) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        line = f"{HEADER}{stamp}: starting replica {replica.index} (restart {replica.restarts}): "
        log_file.write((line + " ".join(launch.argv) + "\n").encode())
        log_file.flush()

    def _fail_start(self, replica: _Replica, message: str) -> None:
        replica.failures += 1
        replica.restarts += 1
        replica.phase, replica.message = "backoff", message
        replica.next_start = self.clock() + backoff_s(replica.failures)
        replica.log_tail = tuple(last_attempt(tail_lines(replica.log_path, LOG_TAIL)))

    def _on_exit(self, replica: _Replica, code: int | str) -> None:
        was_ready = replica.phase == "ready"
        how = f"exited with code {code}" if isinstance(code, int) else str(code)
        if isinstance(code, int) and code < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-code).name}"
        self._fail_start(replica, f"replica {replica.index} {how}{' after it was ready' if was_ready else ''}")
        replica.state_path.unlink(missing_ok=True)
        replica.proc, replica.pid, replica.port = None, None, None
        log.warning(
            "%s/%d: %s; next start in %.0f s",
            replica.workload,
            replica.index,
            replica.message,
            replica.next_start - self.clock(),
        )

    def _probed(self, replica: _Replica, path: str) -> str:
        """The result of the probe ``observe`` started (one not back yet has failed), or of one made now."""
        started = self._probing.get((replica.workload, replica.index, replica.pid))
        if started is None:
            return self.probe(replica.host, replica.port or 0, path)
        if not started.done():
            return f"GET {path}: no answer within {self.settings.runtime_probe_timeout_s:g} s"
        del self._probing[(replica.workload, replica.index, replica.pid)]
        return started.result()

    def _probe(self, replica: _Replica, now: float) -> None:
        path = self._health_paths.get(replica.workload, "/health")
        problem = self._probed(replica, path)
        if not problem:
            if replica.phase != "ready":
                log.info("%s/%d: ready on port %s", replica.workload, replica.index, replica.port)
            replica.phase, replica.failures, replica.probe_failures, replica.message = "ready", 0, 0, ""
            return
        if replica.phase == "ready":
            replica.probe_failures += 1
            if replica.probe_failures >= PROBE_FAILURES_UNREADY:
                replica.phase, replica.message = "starting", f"health check failing: {problem}"
            return
        if now - replica.started_at > self.settings.runtime_start_timeout_s:
            self._signal(replica, signal.SIGKILL)
            if replica.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):  # one stuck in the kernel is not waited on
                    replica.proc.wait(timeout=10)
            self._on_exit(replica, f"was not ready after {self.settings.runtime_start_timeout_s:.0f} s and was killed")

    def _terminate(self, replica: _Replica) -> None:
        if self._exit_code(replica) is None:
            self._signal(replica, signal.SIGTERM)
        replica.phase = "terminating"
        replica.stop_deadline = self.clock() + self.settings.runtime_stop_grace_s

    def _assign_gpus(self, spec: WorkloadSpec, replica: _Replica) -> tuple[int, ...] | None:
        """The GPUs (their indices) this replica gets, placed by ``pools.place`` beside the running replicas, which
        stay where they are: admission's own placement (best fit for slices), so the two pictures match. None: no
        GPU has room now."""
        if not spec.resources.gpu_devices or not self.gpus:
            return ()
        slot = {g.index: i for i, g in enumerate(self.gpus)}  # GPU index → its place in the pool
        running = [
            Claim(
                f"{r.workload}/{r.index}",
                Resources(gpus=len(r.gpu_ids)) if r.whole_gpus else Resources(gpu_memory_mib=r.gpu_memory_mib),
                on=(tuple(slot[i] for i in r.gpu_ids if i in slot),),
            )
            for reps in self._workloads.values()
            for r in reps.values()
            if r is not replica and r.pid and r.gpu_ids
        ]
        went = place(machine.capacity(self.gpus), running, Claim(replica.workload, spec.resources))
        return None if went is None else tuple(self.gpus[i].index for i in went[0])

    # ------------------------------------------------------------------------------------------- processes

    def _process(self, replica: _Replica) -> psutil.Process | None:
        """The replica's process if it is still the one Cove started (pid and start time match)."""
        if replica.pid is None:
            return None
        try:
            proc = psutil.Process(replica.pid)
            if replica.create_time is not None and abs(proc.create_time() - replica.create_time) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE and replica.proc is None:
                return None
            return proc
        except psutil.Error:
            return None

    def _exit_code(self, replica: _Replica) -> int | str | None:
        """None while running; the exit code for children; a phrase for adopted processes."""
        if replica.proc is not None:
            return replica.proc.poll()
        if replica.pid is None:
            return "was not running"
        return None if self._process(replica) is not None else "exited (adopted process; exit code unknown)"

    def _signal(self, replica: _Replica, sig: signal.Signals) -> None:
        if self._process(replica) is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(replica.pid or 0, sig)

    def _save(self, replica: _Replica) -> None:
        replica.state_path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "workload": replica.workload,
            "index": replica.index,
            "fingerprint": replica.fingerprint,
            "upstream_model": replica.upstream_model,
            "pid": replica.pid,
            "create_time": replica.create_time,
            "port": replica.port,
            "host": replica.host,
            "gpu_ids": list(replica.gpu_ids),
            "whole_gpus": replica.whole_gpus,
            "gpu_memory_mib": replica.gpu_memory_mib,
            "restarts": replica.restarts,
        }
        tmp = replica.state_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(state))
            tmp.replace(replica.state_path)
        except OSError as exc:  # the replica runs on; only a restarted backend would not adopt it
            log.warning("%s/%d: cannot record its state: %s", replica.workload, replica.index, exc)

    def _adopt(self) -> None:
        """Take over replicas a previous backend left running; forget the ones that are gone."""
        for path in sorted(self.settings.runs_dir.glob("*/*.json")):
            try:
                state = json.loads(path.read_text())
                replica = _Replica(
                    workload=state["workload"],
                    index=int(state["index"]),
                    fingerprint=state["fingerprint"],
                    upstream_model=state.get("upstream_model", ""),
                    state_path=path,
                    log_path=self.settings.logs_dir / state["workload"] / f"replica-{state['index']}.log",
                    phase="starting",
                    port=state["port"],
                    pid=state["pid"],
                    create_time=state["create_time"],
                    gpu_ids=tuple(state.get("gpu_ids", ())),
                    whole_gpus=bool(state.get("whole_gpus", True)),
                    gpu_memory_mib=int(state.get("gpu_memory_mib", 0)),
                    restarts=int(state.get("restarts", 0)),
                    started_at=self.clock(),
                    adopted=True,
                    host=state.get("host") or "127.0.0.1",
                )
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable replica state %s: %s", path, exc)
                path.unlink(missing_ok=True)
                continue
            if self._process(replica) is None:
                path.unlink(missing_ok=True)
                continue
            log.info(
                "%s/%d: adopted running pid %s on port %s", replica.workload, replica.index, replica.pid, replica.port
            )
            self._workloads.setdefault(replica.workload, {})[replica.index] = replica

    def _status(self, name: str, upstream: str, unavailable: str) -> WorkloadStatus:
        slot = {g.index: i for i, g in enumerate(self.gpus)}  # GPU index → its place in the pool
        replicas = tuple(
            ReplicaStatus(
                index=r.index,
                phase=r.phase,
                endpoint=r.endpoint if r.phase == "ready" else None,
                restarts=r.restarts,
                failures=r.failures,
                message=r.message,
                log_tail=r.log_tail,
                gpus=tuple(slot[i] for i in r.gpu_ids if i in slot),
            )
            for _, r in sorted(self._workloads.get(name, {}).items())
        )
        return WorkloadStatus(name=name, replicas=replicas, upstream_model=upstream, unavailable=unavailable)


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None
