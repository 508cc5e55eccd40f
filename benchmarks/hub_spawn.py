"""Notebook spawn-to-ready through Cove's hub next to a bare JupyterHub, and how late the idle culler stops a server.

1. Spawn-to-ready. Two hubs run side by side, each in its own temporary directory and on its own free ports:

   - Cove's hub, started as ``cove hub`` (``python -m studio.cli hub``) in a throwaway COVE_HOME holding a ``dev``
     pool big enough that admission never refuses; it spawns with ``LocalPoolSpawner`` (profile ``bench-cpu-1``).
     Only Cove's users start servers there, so each user is made in Cove's database before its first spawn, and the
     hub trusts every user (``LocalPoolSpawner.trust_all_users``, in a COVE_HUB_EXTRA_CONFIG file): embedded, only
     the first admin may start one otherwise.
   - A bare JupyterHub (``jupyterhub -f CONFIG``) with ``SimpleLocalProcessSpawner`` and everything else Cove's config
     sets that bears on a spawn: the same ``Spawner.cmd`` and ``Spawner.args``, the same Python
     configurable-http-proxy, the dummy authenticator, the same activity interval and timeouts.

   Both are driven the same way through their REST API with a service token (Cove's: the studio's, from
   COVE_HOME/hub/api_token; the bare hub's: a service with the admin role): create the user,
   ``POST /hub/api/users/NAME/server``, poll ``GET /hub/api/users/NAME`` every 20 ms until the default server is
   ``ready`` (the time recorded), then ``DELETE`` the server and wait until it is gone. After one warm-up spawn on each
   hub, spawns alternate Cove, bare, Cove, bare … for ``--rounds`` rounds, a new user name each time, so background
   noise hits both alike. Prints one line per spawn (with the 1-minute load average), then median, p10/p90 and
   min/max per hub and the ratio of the medians (goal: Cove ≤ 1.05× bare). Last, from the hubs' logs, where the time
   went: the hub before it starts the process (Cove's admission is here), the process until JupyterLab listens, and
   the hub's readiness polling until it notices (a jittered exponential backoff: most of the spread between spawns).

2. Culling. A second Cove hub with COVE_HUB_IDLE_TIMEOUT_S=``--idle-timeout`` (at least 10 s, Cove's minimum),
   COVE_HUB_CULL_EVERY_S=1 and COVE_HUB_ACTIVITY_INTERVAL_S=1 spawns a server ``--cull-runs`` times and leaves it
   idle; the delay is from the server's ``last_activity`` (as the API reports it right after ready) until the server
   is gone from the API, printed with its excess over the timeout; also from the last ``last_activity`` the API
   showed (what the culler goes by: the server's later activity reports move it), and how long the stop itself took.

Every process is stopped at the end, on an error or Ctrl-C too: servers deleted, hubs sent SIGTERM (SIGKILL after
30 s), and anything left (proxy, single-user servers, found by their environment) killed and reported.

    .venv/bin/python benchmarks/hub_spawn.py [--rounds 10] [--cull-runs 3] [--idle-timeout 10] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from hub.spawner import singleuser_args
from studio.bootstrap import open_studio
from studio.models import Pool, UserCreate
from studio.services import users
from studio.settings import Settings
from studio.values import Purpose

ROOT = Path(__file__).resolve().parents[1]
BINDIR = Path(sys.executable).parent  # .venv/bin, as hub/jupyterhub_config.py finds it
POLL_S = 0.02
GOAL_RATIO = 1.05
POOL = "bench"
PROFILE = f"{POOL}-cpu-1"
BODY = {"profile": PROFILE}  # sent to both hubs; the bare one keeps it as user_options and ignores it
TAG = "COVE_BENCH_HUB"  # in each hub's environment (and its proxy's), to find leftovers
# Cove's own defaults for the spawn part (see the fairness note in main)
DEFAULTS = {name: Settings.model_fields[f"hub_{name}"].default for name in ("idle_timeout_s", "cull_every_s")}
DEFAULT_ACTIVITY_S = int(Settings.model_fields["hub_activity_interval_s"].default)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def clean_environ() -> dict[str, str]:
    """This process's environment without COVE_* (a developer's own settings must not leak into the hubs)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVE_")}


def default_sigint() -> None:
    """In the child before exec: an inherited "ignore" would make the hub's services ignore Ctrl-C and SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ------------------------------------------------------------------------------------------------------ a hub


@dataclass
class Hub:
    """One JupyterHub as a child process in its own session, and a client of its REST API."""

    label: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int  # the proxy: the public face
    api_port: int  # the hub's own API: its single-user servers' JUPYTERHUB_API_URL names it
    token: str | Path  # the service token, or the file the hub writes it to
    log: Path
    add_user: Callable[[str], None] | None = None  # makes a user the hub must know before it spawns for them
    proc: subprocess.Popen[bytes] | None = None
    api: httpx.Client | None = None
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env | {TAG: self.tag},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only this script, which then stops the hub in order
                preexec_fn=default_sigint,
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            self.check_alive()
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.label}: no answer on /hub/health in {timeout:.0f} s\n{tail(self.log)}")
            time.sleep(0.1)
        token = self.token.read_text().strip() if isinstance(self.token, Path) else self.token
        self.api = httpx.Client(base_url=f"{self.url}/hub/api", headers={"Authorization": f"token {token}"}, timeout=30)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/hub/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.label}: the hub exited with {self.proc.returncode}\n{tail(self.log)}")

    def rest(self) -> httpx.Client:
        assert self.api is not None, "the hub is not started"
        return self.api

    def server(self, user: str) -> dict[str, Any] | None:
        """The user's default server as the API shows it; None when there is none."""
        reply = self.rest().get(f"/users/{user}")
        reply.raise_for_status()
        found: dict[str, Any] | None = reply.json()["servers"].get("")
        return found

    def stop(self) -> list[str]:
        """Delete the servers, SIGTERM the hub (SIGKILL after 30 s), then kill what is left of its processes;
        returns the leftovers' descriptions (empty when the hub cleaned up after itself)."""
        if self.api is not None:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                for user in self.api.get("/users", timeout=5).json():
                    if user.get("servers"):
                        self.api.delete(f"/users/{user['name']}/server", timeout=5)
            self.api.close()
            self.api = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        return kill_leftovers([f"{TAG}={self.tag}", f"JUPYTERHUB_API_URL=http://127.0.0.1:{self.api_port}/hub/api"])


def kill_leftovers(marks: list[str], grace: float = 5) -> list[str]:
    """SIGTERM, then SIGKILL, every process whose environment holds one of ``marks``; their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            environ = (entry / "environ").read_bytes().split(b"\0")
            if any(mark.encode() in environ for mark in marks):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in found):
            time.sleep(0.1)
    return [f"{pid} {cmd.strip()}" for pid, cmd in found.items()]


@contextlib.contextmanager
def running(hub: Hub) -> Iterator[Hub]:
    """The hub started; stopped however the block ends (a second Ctrl-C cannot cut the cleanup short)."""
    try:
        hub.start()
        print(f"{hub.label}: hub pid {hub.proc.pid if hub.proc else '?'} on {hub.url} (log {hub.log})")
        yield hub
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            leftovers = hub.stop()
        finally:
            signal.signal(signal.SIGINT, previous)
        if leftovers:
            print(f"{hub.label}: LEFT BEHIND (killed now): " + "; ".join(leftovers))
        else:
            print(f"{hub.label}: stopped, no process left behind")


# ------------------------------------------------------------------------------------------------ the two hubs


def cove_hub(home: Path, *, idle_timeout_s: int, cull_every_s: int, activity_s: int) -> Hub:
    """``cove hub`` in ``home``, with a dev pool of 64 cores so that admission never refuses."""
    settings = Settings(home=home, demo=False)
    db = open_studio(settings)
    with db.session() as session:
        session.add(Pool(name=POOL, purpose=Purpose.DEV.value, cpu_cores=64, memory_mib=256 * 1024))
        session.commit()
    db.dispose()
    extra = home / "hub_extra_config.py"
    extra.write_text("c.LocalPoolSpawner.trust_all_users = True  # several bench users on one machine\n")

    def add_user(name: str) -> None:
        db = open_studio(settings)
        try:
            users.create_user(db=db, actor=users.first_admin(db=db), data=UserCreate(name=name))
        finally:
            db.dispose()

    port, api_port = free_port(), free_port()
    env = clean_environ() | {
        "COVE_HOME": str(home),
        "COVE_HUB_EXTRA_CONFIG": str(extra),
        "COVE_PORT": str(free_port()),
        "COVE_DEMO": "false",
        "COVE_HUB_PORT": str(port),
        "COVE_HUB_API_PORT": str(api_port),
        "COVE_HUB_PROXY_API_PORT": str(free_port()),
        "COVE_HUB_IDLE_TIMEOUT_S": str(idle_timeout_s),
        "COVE_HUB_CULL_EVERY_S": str(cull_every_s),
        "COVE_HUB_ACTIVITY_INTERVAL_S": str(activity_s),
        "COVE_HUB_MAX_AGE_S": "0",
    }
    return Hub(
        label="cove",
        argv=[sys.executable, "-m", "studio.cli", "hub"],
        env=env,
        cwd=ROOT,
        port=port,
        api_port=api_port,
        token=settings.hub_dir / "api_token",
        log=home / "hub.log",
        add_user=add_user,
    )


BARE_CONFIG = """\
# Written by benchmarks/hub_spawn.py: a bare JupyterHub spawning exactly what Cove's hub spawns.
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {api_port}
c.JupyterHub.proxy_class = "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = {args!r}
c.Spawner.environment = {{"JUPYTERHUB_ACTIVITY_INTERVAL": "{activity_s}"}}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
c.JupyterHub.last_activity_interval = {activity_s}
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["bench"]}}]
"""


def bare_hub(folder: Path, *, activity_s: int) -> Hub:
    """``jupyterhub -f folder/jupyterhub_config.py``, run in ``folder`` (its database, secret and pid files)."""
    folder.mkdir(parents=True, exist_ok=True)
    port, api_port, token = free_port(), free_port(), secrets.token_hex(32)
    config = folder / "jupyterhub_config.py"
    config.write_text(
        BARE_CONFIG.format(
            port=port,
            api_port=api_port,
            proxy_api_port=free_port(),
            proxy=str(BINDIR / "configurable-http-proxy"),
            singleuser=str(BINDIR / "jupyterhub-singleuser"),
            args=singleuser_args(),
            activity_s=activity_s,
            token=token,
        )
    )
    return Hub(
        label="bare",
        argv=[str(BINDIR / "jupyterhub"), "-f", str(config)],
        env=clean_environ(),
        cwd=folder,
        port=port,
        api_port=api_port,
        token=token,
        log=folder / "hub.log",
    )


# ------------------------------------------------------------------------------------------------ one spawn


@dataclass
class Spawn:
    hub: str
    user: str
    ready_s: float  # POST sent → GET says ready
    post_s: float  # POST sent → its reply (the hub waits for a quick spawn before answering)
    stop_s: float  # DELETE sent → gone from the API
    load: float  # 1-minute load average when it was ready


@dataclass
class Phases:
    """One spawn as the hub's log tells it (the clocks of the hub and of the server, not this script's)."""

    before_popen_s: float  # POST arrived → the single-user process started (Cove: profile, admission claim)
    process_s: float  # process started → JupyterLab listening ("Jupyter Server … is running at")
    noticed_s: float  # listening → the hub saw it answer (its readiness polling: backoff 0.2 s × 2ⁿ, jittered)


def wait_for(hub: Hub, user: str, done: Any, what: str, timeout: float) -> dict[str, Any] | None:
    """Poll the user's server every POLL_S until ``done(server)``; the last server seen."""
    deadline = time.monotonic() + timeout
    while True:
        server = hub.server(user)
        if done(server):
            return server
        hub.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"{hub.label}: {user}'s server not {what} in {timeout:.0f} s: {server}\n{tail(hub.log)}")
        time.sleep(POLL_S)


def start_server(hub: Hub, user: str, timeout: float = 180) -> tuple[float, float]:
    """Spawn ``user``'s default server and wait until it is ready: (seconds to ready, seconds until POST answered)."""
    api = hub.rest()
    if api.get(f"/users/{user}").status_code == 404:
        if hub.add_user is not None:
            hub.add_user(user)
        api.post(f"/users/{user}").raise_for_status()
    started = time.perf_counter()
    reply = api.post(f"/users/{user}/server", json=BODY)
    posted = time.perf_counter() - started
    if reply.status_code not in (201, 202):
        raise SystemExit(f"{hub.label}: spawn for {user} answered {reply.status_code}: {reply.text}\n{tail(hub.log)}")
    wait_for(hub, user, lambda s: bool(s and s.get("ready")), "ready", timeout)
    return time.perf_counter() - started, posted


def stop_server(hub: Hub, user: str, timeout: float = 60) -> float:
    started = time.perf_counter()
    reply = hub.rest().delete(f"/users/{user}/server")
    if reply.status_code not in (202, 204):
        raise SystemExit(f"{hub.label}: stopping {user}'s server answered {reply.status_code}: {reply.text}")
    wait_for(hub, user, lambda s: s is None, "gone", timeout)
    return time.perf_counter() - started


def spawn_once(hub: Hub, user: str) -> Spawn:
    ready, posted = start_server(hub, user)
    load = os.getloadavg()[0]
    return Spawn(hub.label, user, ready, posted, stop_server(hub, user), load)


def print_spawn(spawn: Spawn, what: str) -> None:
    print(
        f"  {what:<10} {spawn.hub:<4} {spawn.user:<10} ready {spawn.ready_s:6.3f} s"
        f"  (POST answered {spawn.post_s:6.3f} s; stopped in {spawn.stop_s:5.2f} s; load {spawn.load:.2f})",
        flush=True,
    )


def measure_spawns(cove: Hub, bare: Hub, rounds: int) -> list[Spawn]:
    for hub in (cove, bare):
        print_spawn(spawn_once(hub, f"{hub.label}-warm"), "warm-up")
    spawns = []
    for i in range(1, rounds + 1):
        for hub in (cove, bare):  # ABAB
            spawn = spawn_once(hub, f"{hub.label}-{i:02d}")
            spawns.append(spawn)
            print_spawn(spawn, f"round {i}")
    return spawns


STAMP = r"\[\w (?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d{3}) "
POSTED = re.compile(
    STAMP + r"JupyterHub log:\d+\] 20[12] POST /hub/api/users/(?P<user>[^/ ]+)/server .* (?P<ms>[\d.]+)ms"
)
POPEN = re.compile(STAMP + r"JupyterHub spawner:\d+\] Spawning ")
LISTENING = re.compile(STAMP + r"ServerApp\] http://\S+/user/(?P<user>[^/ ]+)/")
NOTICED = re.compile(STAMP + r"JupyterHub base:\d+\] User (?P<user>\S+) took [\d.]+ seconds to start")


def log_phases(log: Path) -> dict[str, Phases]:
    """Each user's spawn split at the hub's and the server's log lines (spawns on one hub run one at a time)."""
    at: dict[str, dict[str, float]] = {}
    popen = 0.0
    for line in log.read_text(errors="replace").splitlines():
        if match := POPEN.match(line):
            popen = stamp(match)
        elif match := LISTENING.match(line):
            at.setdefault(match["user"], {}).update(popen=popen, listening=stamp(match))
        elif match := NOTICED.match(line):
            at.setdefault(match["user"], {})["noticed"] = stamp(match)
        elif match := POSTED.match(line):
            at.setdefault(match["user"], {})["posted"] = stamp(match) - float(match["ms"]) / 1000
    return {
        user: Phases(t["popen"] - t["posted"], t["listening"] - t["popen"], t["noticed"] - t["listening"])
        for user, t in at.items()
        if t.keys() >= {"posted", "popen", "listening", "noticed"}
    }


def stamp(match: re.Match[str]) -> float:
    return datetime.strptime(match["at"].replace(",", "."), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def print_spawn_table(spawns: list[Spawn]) -> None:
    print(f"\nspawn-to-ready, seconds ({len(spawns) // 2} spawns per hub, after one warm-up each):")
    print(f"{'hub':<5} {'median':>7} {'p10':>7} {'p90':>7} {'min':>7} {'max':>7}   {'POST answered':>13}  {'stop':>5}")
    medians = {}
    for label in ("cove", "bare"):
        mine = [s for s in spawns if s.hub == label]
        ready = sorted(s.ready_s for s in mine)
        deciles = statistics.quantiles(ready, n=10, method="inclusive") if len(ready) > 1 else ready * 9
        medians[label] = statistics.median(ready)
        print(
            f"{label:<5} {medians[label]:7.3f} {deciles[0]:7.3f} {deciles[-1]:7.3f} {ready[0]:7.3f} {ready[-1]:7.3f}"
            f"   {statistics.median(s.post_s for s in mine):13.3f}  {statistics.median(s.stop_s for s in mine):5.2f}"
        )
    ratio = medians["cove"] / medians["bare"]
    verdict = "meets" if ratio <= GOAL_RATIO else "MISSES"
    print(
        f"ratio of medians cove/bare: {ratio:.3f}× ({medians['cove'] - medians['bare']:+.3f} s); "
        f"{verdict} the goal ≤ {GOAL_RATIO:.2f}×"
    )


def print_phases(spawns: list[Spawn], phases: dict[str, dict[str, Phases]]) -> None:
    """Where the time went, and the comparison again without the hub's jittered readiness polling (the same code in
    both hubs, and most of the spread): what is left is what Cove could add."""
    print("where the time goes, from the hubs' logs (medians, seconds):")
    print(
        f"{'hub':<5} {'POST → Popen':>12} {'Popen → listening':>17} {'listening → hub saw it':>22}"
        f"   {'ready − that':>12}"
    )
    steady = {}
    for label in ("cove", "bare"):
        logged = [(s, phases[label][s.user]) for s in spawns if s.hub == label and s.user in phases[label]]
        if not logged:
            return
        steady[label] = statistics.median(s.ready_s - p.noticed_s for s, p in logged)
        print(
            f"{label:<5} {statistics.median(p.before_popen_s for _, p in logged):12.3f}"
            f" {statistics.median(p.process_s for _, p in logged):17.3f}"
            f" {statistics.median(p.noticed_s for _, p in logged):22.3f}   {steady[label]:12.3f}"
            f"   ({len(logged)} spawns)"
        )
    print(f"ratio cove/bare without the readiness polling: {steady['cove'] / steady['bare']:.3f}×")


# ------------------------------------------------------------------------------------------------ culling


def iso_seconds(stamp: str) -> float:
    """A timestamp from the API (ISO 8601, UTC, 'Z') as seconds since the epoch."""
    return datetime.fromisoformat(stamp).timestamp()


def measure_cull(hub: Hub, run: int, idle_timeout_s: int) -> tuple[float, float]:
    """Spawn, leave idle, wait until culled: (seconds from last_activity until gone, of which the stop took)."""
    user = f"cull-{run}"
    start_server(hub, user)
    server = hub.server(user)
    assert server is not None
    last_activity = iso_seconds(server["last_activity"])
    stopping_at: float | None = None
    latest = server["last_activity"]
    deadline = time.monotonic() + 3 * idle_timeout_s + 60
    while (server := hub.server(user)) is not None:
        latest = server["last_activity"]
        if stopping_at is None and server.get("pending") == "stop":
            stopping_at = time.time()
        hub.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"cove: {user}'s server was not culled: {server}\n{tail(hub.log)}")
        time.sleep(POLL_S)
    gone_at = time.time()
    delay = gone_at - last_activity
    stop = gone_at - stopping_at if stopping_at is not None else 0.0
    since_latest = gone_at - iso_seconds(latest)
    print(
        f"  cull {run}: gone {delay:6.2f} s after last_activity at ready, {delay - idle_timeout_s:+5.2f} s over the"
        f" timeout; {since_latest:6.2f} s ({since_latest - idle_timeout_s:+5.2f} s) after the last last_activity"
        f" reported; the stop took {stop:4.2f} s of it",
        flush=True,
    )
    return delay, stop


# ------------------------------------------------------------------------------------------------------ main


@contextlib.contextmanager
def scratch(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cove-bench-hub-"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured spawns per hub, after one warm-up each")
    parser.add_argument("--cull-runs", type=int, default=3, help="servers left idle until culled (0: skip)")
    parser.add_argument("--idle-timeout", type=int, default=10, help="COVE_HUB_IDLE_TIMEOUT_S for culling (≥ 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (hub logs, databases)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.idle_timeout < 10:
        parser.error("--idle-timeout must be at least 10 (Cove's minimum)")
    for tool in ("jupyterhub", "jupyterhub-singleuser", "configurable-http-proxy"):
        if not (BINDIR / tool).exists():
            parser.error(f"{BINDIR / tool} is missing: run with the project's .venv/bin/python")

    print(
        f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; jupyterhub {version('jupyterhub')}, "
        f"jupyterlab {version('jupyterlab')}, configurable-http-proxy {version('configurable-http-proxy')}"
    )
    print(f"load average at start: {load_average()}")
    try:
        with scratch(args.keep) as root:
            # Fairness: the spawn part runs Cove's hub with Cove's defaults (activity every 60 s, idle culler every
            # 60 s, timeout 1 h), as a user runs it, and the bare hub with the same activity interval. With the
            # culling settings (activity and culler every 1 s) Cove's hub would also answer the culler's request
            # every second, which the bare hub (no culler) would not: a cost the spawn comparison should not carry.
            # The culling part gets its own Cove hub, started afterwards with the short settings.
            activity = DEFAULT_ACTIVITY_S
            print(f"\n1. spawn-to-ready, Cove's hub next to a bare JupyterHub (activity interval {activity} s)")
            with (
                running(cove_hub(root / "cove", **DEFAULTS, activity_s=activity)) as cove,
                running(bare_hub(root / "bare", activity_s=activity)) as bare,
            ):
                spawns = measure_spawns(cove, bare, args.rounds)
            print_spawn_table(spawns)
            print_phases(spawns, {hub.label: log_phases(hub.log) for hub in (cove, bare)})

            if args.cull_runs > 0:
                timeout = args.idle_timeout
                print(f"\n2. culling: idle timeout {timeout} s, culler every 1 s, activity every 1 s")
                with running(cove_hub(root / "cove-cull", idle_timeout_s=timeout, cull_every_s=1, activity_s=1)) as hub:
                    culls = [measure_cull(hub, run, timeout) for run in range(1, args.cull_runs + 1)]
                delays = [d for d, _ in culls]
                print(
                    f"cull delay median {statistics.median(delays):.2f} s (timeout {timeout} s; excess "
                    + ", ".join(f"{d - timeout:+.2f}" for d in delays)
                    + " s)"
                )
    except KeyboardInterrupt:
        print("interrupted; hubs and servers stopped")
        raise SystemExit(130) from None
    finally:
        print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
