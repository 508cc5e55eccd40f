"""LocalTasks: run-to-completion processes (fine-tunes) on this machine, for the LocalBackend.

A task is started once, in its own session, with its log in ``COVE_HOME/tasks/<name>/task.log`` and the environment
of ``environment.child_env`` (none of Cove's settings) plus the spec's variables and ``COVE_TASK_DIR``. It runs under a
small ``sh`` wrapper that writes the program's exit status to ``exit_code`` beside the log, so a task that ends while
no controller watches it (the control plane restarted) is still known to have succeeded or failed; a task killed
outright (SIGKILL, a machine's OOM killer) leaves no status and is reported as killed. Bookkeeping (pid, start
time) lives in ``state.json``; a new LocalTasks adopts tasks whose pid and start time still match. A finished task is
kept (its state and log) until ``stop`` forgets it, so a controller that crashes after the task ended still sees how
it ended. Stopping sends SIGTERM to the task's process group (the trainer saves a checkpoint and exits), then SIGKILL
after the grace period.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from studio.backends.base import TaskSpec, TaskState
from studio.backends.environment import child_env
from studio.backends.logfiles import tail_lines
from studio.settings import Settings

log = logging.getLogger(__name__)

LOG_TAIL = 20
# The wrapper: the program's status is written where the backend finds it after any restart. TERM and INT are
# trapped (not ignored, which the program would inherit) so the shell outlives its program and records its status.
WRAPPER = 'trap : TERM INT; "$@"; code=$?; echo "$code" > exit_code.tmp && mv exit_code.tmp exit_code; exit "$code"'
# Tasks left running by close(stop_tasks=False), kept referenced so Python does not report them as leaked.
_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []


@dataclass
class _Task:
    name: str
    folder: Path
    pid: int | None = None
    create_time: float | None = None
    proc: subprocess.Popen[bytes] | None = None  # None for adopted tasks
    stop_deadline: float | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / "task.log"


class LocalTasks:
    """See the module docstring. ``spawn`` is ``subprocess.Popen``'s stand-in; ``clock`` gives seconds."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.spawn = spawn
        self._tasks: dict[str, _Task] = {}
        settings.tasks_dir.mkdir(parents=True, exist_ok=True)
        for state in sorted(settings.tasks_dir.glob("*/state.json")):
            self._adopt(state)

    def run(self, spec: TaskSpec) -> TaskState:
        task = self._tasks.get(spec.name)
        if task is None:
            task = self._tasks[spec.name] = _Task(spec.name, self.settings.tasks_dir / spec.name)
            return self._start(task, spec)
        return self._state(task)

    def stop(self, name: str) -> bool:
        task = self._tasks.get(name)
        if task is None:
            shutil.rmtree(self.settings.tasks_dir / name, ignore_errors=True)
            return True
        if self._running(task):
            if task.stop_deadline is None:
                task.stop_deadline = self.clock() + self.settings.runtime_stop_grace_s
                self._signal(task, signal.SIGTERM)
            elif self.clock() >= task.stop_deadline:
                self._signal(task, signal.SIGKILL)
            return False
        if task.proc is not None:
            task.proc.wait()
        del self._tasks[name]
        shutil.rmtree(task.folder, ignore_errors=True)
        return True

    def names(self) -> set[str]:
        return set(self._tasks)

    def logs(self, name: str, *, tail: int = 100) -> list[str]:
        return tail_lines(self.settings.tasks_dir / name / "task.log", tail)

    def close(self, *, stop_tasks: bool) -> None:
        """Let go of the tasks; with ``stop_tasks`` stop them first (they are not forgotten: their state says how
        they ended)."""
        for task in self._tasks.values():
            if stop_tasks and self._running(task):
                self._signal(task, signal.SIGTERM)
        if stop_tasks:
            procs = [p for t in self._tasks.values() if (p := self._process(t)) is not None]
            _, alive = psutil.wait_procs(procs, timeout=self.settings.runtime_stop_grace_s)
            for proc in alive:
                with contextlib.suppress(psutil.Error, OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for task in self._tasks.values():
            if task.proc is not None and stop_tasks:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    task.proc.wait(timeout=5)
            elif task.proc is not None:
                _LEFT_RUNNING.append(task.proc)
        self._tasks.clear()

    # ------------------------------------------------------------------------------------------- internals

    def _start(self, task: _Task, spec: TaskSpec) -> TaskState:
        shutil.rmtree(task.folder, ignore_errors=True)
        task.folder.mkdir(parents=True)
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
        # what any local process may inherit (no COVE_* settings: the task needs no database), then its own
        env = child_env(os.environ, {"COVE_TASK_DIR": str(task.folder), **dict(spec.env)})
        if not spec.resources.gpu_devices:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU task stays off the GPUs the model servers hold
        argv = ["sh", "-c", WRAPPER, "cove-task", *spec.command]
        with task.log_path.open("ab") as log_file:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log_file.write(f"--- cove {stamp}: starting task {spec.name}: {' '.join(spec.command)}\n".encode())
            log_file.flush()
            try:
                proc = self.spawn(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=task.folder,
                    start_new_session=True,
                )
            except OSError as exc:
                (task.folder / "exit_code").write_text("127")
                return TaskState("failed", f"cannot start {spec.command[0]}: {exc.strerror or exc}", 127)
        task.proc, task.pid = proc, proc.pid
        with contextlib.suppress(psutil.Error):
            task.create_time = float(psutil.Process(proc.pid).create_time())
        state = {"name": task.name, "pid": task.pid, "create_time": task.create_time}
        (task.folder / "state.json").write_text(json.dumps(state))
        log.info("task %s: started pid %d", task.name, proc.pid)
        return TaskState("running")

    def _adopt(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text())
            task = _Task(state["name"], path.parent, pid=state["pid"], create_time=state.get("create_time"))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable task state %s: %s", path, exc)
            return
        self._tasks[task.name] = task

    def _state(self, task: _Task) -> TaskState:
        if self._running(task):
            return TaskState("running")
        code = self._exit_code(task)
        if code == 0:
            return TaskState("succeeded", exit_code=0)
        tail = tuple(tail_lines(task.log_path, LOG_TAIL))
        if code is None:
            return TaskState("failed", "the process was killed (no exit status: SIGKILL, or out of memory)", None, tail)
        if code > 128:
            with contextlib.suppress(ValueError):
                return TaskState("failed", f"the process was stopped by {signal.Signals(code - 128).name}", code, tail)
        return TaskState("failed", f"the process exited with code {code}", code, tail)

    def _exit_code(self, task: _Task) -> int | None:
        if task.proc is not None:
            code = task.proc.poll()
            if code is not None and code < 0:  # the wrapper itself was killed
                return None if code == -signal.SIGKILL else 128 - code
        with contextlib.suppress(OSError, ValueError):
            return int((task.folder / "exit_code").read_text())
        return None

    def _running(self, task: _Task) -> bool:
        if task.proc is not None:
            return task.proc.poll() is None
        for proc in _LEFT_RUNNING:  # an adopted task may be this process's own child: reap it once it ends
            proc.poll()
        return self._process(task) is not None

    def _process(self, task: _Task) -> psutil.Process | None:
        if task.pid is None:
            return None
        try:
            proc = psutil.Process(task.pid)
            if task.create_time is not None and abs(proc.create_time() - task.create_time) > 0.01:
                return None
            return None if proc.status() == psutil.STATUS_ZOMBIE and task.proc is None else proc
        except psutil.Error:
            return None

    def _signal(self, task: _Task, sig: signal.Signals) -> None:
        if self._process(task) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(task.pid or 0, sig)
