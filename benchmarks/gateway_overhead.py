"""How much latency the gateway adds, next to calling the runtime directly, with API keys and metering on.

Sets up a throwaway COVE_HOME (a fake model folder, a custom image whose local command runs
``benchmarks/mock_upstream.py``, a member's deployment of it, and two API keys: the admin's, unscoped, and the
member's, limited to that deployment), starts the real ``cove server`` as a subprocess and waits until the controller
has the mock runtime Ready. Then, with one keep-alive aiohttp connection per target and sequential requests, it
calls the runtime directly and through the gateway with each key in turn (every order in rotation, so background noise
hits all alike) and prints p50/p99 for non-streaming and streaming chat, the latency each key kind adds, and the
median of the gateway's own ``x-cove-overhead-ms`` header. With ``--limits memory`` or ``--limits redis`` a third key
joins them, limited (requests and tokens per minute and requests at once, far above what the run sends, so every
request is counted and none refused) in process or through a throwaway ``redis-server`` on loopback: its row beside
the unlimited keys' is the cost of rate limits, side by side in one run. With ``--traces`` the server sends every
request's spans (all sampled) to an OTLP/HTTP sink started here: a run with it against one without is the cost of
traces. Last, throughput through the gateway (the admin's key) at concurrency 32 against the CPU seconds the
gateway process spent. Stops the server with SIGTERM and checks that no process is left behind.

    .venv/bin/python benchmarks/gateway_overhead.py [--requests 2000] [--limits off|memory|redis] [--traces] [--keep]
        [--cprofile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import psutil

from studio.bootstrap import open_studio
from studio.db import Database
from studio.limits import LimitScope
from studio.models import (
    ApiKeyCreate,
    DeploymentCreate,
    DeploymentPublic,
    ImageCreate,
    LimitSet,
    ModelCreate,
    UserCreate,
)
from studio.services import deployments, images, keys, limits, models, usage, users
from studio.settings import Settings
from studio.values import Principal, Resources

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling scripts, when it is imported as benchmarks.…
import processes
from processes import tail

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
MOCK = Path(__file__).resolve().with_name("mock_upstream.py")
DEPLOYMENT = "bench"
MEMBER = "bench-member"
ADMIN_KEY, MEMBER_KEY = "admin's key, unscoped", "member's key, scoped"
LIMITED_KEY = "admin's key, rate-limited"
QUESTION = [{"role": "user", "content": "What is Cove?"}]


# ------------------------------------------------------------------------------------------------ shared helpers


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP collector that accepts every export and keeps nothing (``--traces``): its URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    exports = [0, 0]  # requests, bytes

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            exports[0] += 1
            exports[1] += len(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        print(f"traces: {exports[0]} exports ({exports[1] / 1e6:.1f} MB) received by the sink")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CoveServer:
    """``cove server`` as a subprocess in its own session; ``stop`` sends SIGTERM and then checks that the server
    and every process it started (its replicas) are gone, killing leftovers by pid and reporting them."""

    def __init__(self, settings: Settings, *, cprofile: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.settings, self.env = settings, env or {}
        self.log_path = settings.home / "server.log"
        self.cprofile = cprofile
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        env = {
            **os.environ,
            "COVE_HOME": str(self.settings.home),
            "COVE_PORT": str(self.settings.port),
            "HF_HUB_OFFLINE": "1",
            **self.env,
        }
        profile = ["-m", "cProfile", "-o", str(self.cprofile)] if self.cprofile else []
        self.proc = processes.start(
            [PYTHON, *profile, "-m", "studio.cli", "server"],
            log=self.log_path,
            ready=lambda: processes.answers(self.settings.gateway_url + "/healthz"),
            what="cove server",
            timeout=timeout,
            env=env,
            cwd=ROOT,
            new_session=True,
        )

    def stop(self, timeout: float = 60) -> list[str]:
        """SIGTERM, wait, then the names of processes that had to be killed (empty when the server cleaned up)."""
        if self.proc is None:
            return []
        try:
            family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        processes.stop(self.proc, timeout)
        known = {p.pid for p in family}
        family += [p for p in self._recorded_replicas() if p.pid not in known]  # in case the server died early
        _, alive = psutil.wait_procs(family, timeout=5)
        leftovers = []
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                leftovers.append(f"{proc.pid} {' '.join(proc.cmdline())}")
                proc.kill()
        self.proc = None
        return leftovers

    def _recorded_replicas(self) -> list[psutil.Process]:
        """Replicas the local backend recorded in COVE_HOME/runs and that still run (it removes the records of
        replicas it stopped)."""
        procs = []
        for path in self.settings.runs_dir.glob("*/*.json"):
            with contextlib.suppress(ValueError, KeyError, TypeError, OSError, psutil.Error):
                state = json.loads(path.read_text())
                proc = psutil.Process(int(state["pid"]))
                if abs(proc.create_time() - float(state["create_time"])) < 0.01:
                    procs.append(proc)
        return procs


@contextlib.contextmanager
def cove_home(keep: bool, prefix: str) -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield home
    finally:
        if keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def bench_settings(home: Path) -> Settings:
    """Cove's defaults (keys and metering on), in ``home`` on a free port."""
    return Settings(home=home, port=free_port(), demo=False)


def wait_ready(db: Database, admin: Principal, name: str, timeout: float, log: Path) -> DeploymentPublic:
    deadline = time.monotonic() + timeout
    while True:
        dep = deployments.get_deployment(db=db, actor=admin, name=name)
        if dep.status == "Ready" and dep.endpoints:
            return dep
        if dep.status == "Failed" or time.monotonic() > deadline:
            raise SystemExit(f"deployment {name} is {dep.status}: {dep.message}\nserver log:\n{tail(log)}")
        time.sleep(0.05)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# ------------------------------------------------------------------------------------------------ set-up


def write_fake_model(folder: Path) -> Path:
    """The least a model folder needs to pass ``inspect_folder``: config, one tiny tensor, a tokenizer stub."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<2f", 0, 1))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}))
    return folder


def set_up(db: Database, settings: Settings, admin: Principal, chunks: int, limited: bool) -> dict[str, str]:
    """Model and image (the admin's), a member and their deployment, and two keys; returns each key kind's secret:
    the admin's key reaches every deployment, the member's only theirs, and it is limited to that one. ``limited``:
    a third key of the admin's, with a rate limit no run reaches (every request is counted, none refused)."""
    models.add_model(
        db=db,
        actor=admin,
        data=ModelCreate(name="tiny", source=str(write_fake_model(settings.home / "tiny-model"))),
        cache_dir=settings.models_dir,
    )
    command = [PYTHON, str(MOCK), "--host", "{host}", "--port", "{port}", "--model", "{name}", "--chunks", str(chunks)]
    images.add_image(
        db=db,
        actor=admin,
        data=ImageCreate(
            name="mock-upstream", version="1.0", ref="example.com/cove/mock-upstream", local_command=command
        ),
    )
    users.create_user(db=db, actor=admin, data=UserCreate(name=MEMBER))
    member = users.principal(db=db, name=MEMBER)
    deployments.create_deployment(
        db=db,
        actor=member,
        data=DeploymentCreate(
            name=DEPLOYMENT, model="tiny", image="mock-upstream", resources=Resources(cpu=0.5, memory_mib=256)
        ),
    )
    secrets = {
        ADMIN_KEY: keys.create_key(db=db, actor=admin, data=ApiKeyCreate(name="bench")).key,
        MEMBER_KEY: keys.create_key(
            db=db, actor=member, data=ApiKeyCreate(name="bench-scoped", deployments=[DEPLOYMENT])
        ).key,
    }
    if limited:
        secrets[LIMITED_KEY] = keys.create_key(db=db, actor=admin, data=ApiKeyCreate(name="bench-limited")).key
        values = LimitSet(scope=LimitScope.KEY, subject="bench-limited", rpm=10**9, tpm=10**12, concurrency=10**6)
        limits.set_limit(db=db, actor=admin, data=values)
    return secrets


@contextlib.contextmanager
def redis_server(home: Path) -> Iterator[str]:
    """A throwaway redis-server on loopback (apt's; scripts/test-services installs it); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--limits redis needs redis-server (scripts/test-services installs it)")
    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(home)]
    with (home / "redis.log").open("ab") as log:
        proc = subprocess.Popen([binary, *options], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start:\n{tail(home / 'redis.log')}")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------ measuring


@dataclass
class Target:
    label: str
    url: str
    headers: dict[str, str]
    session: aiohttp.ClientSession
    seconds: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)


def client(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit, force_close=False),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def call(target: Target, payload: bytes) -> tuple[float, bytes, str | None]:
    started = time.perf_counter()
    async with target.session.post(target.url, data=payload, headers=target.headers) as response:
        body = await response.read()  # for a stream: every chunk, up to the end
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"{target.label} answered {response.status}: {body[:500]!r}")
        return elapsed, body, response.headers.get("x-cove-overhead-ms")


def check_answer(label: str, body: bytes, stream: bool, model: str, chunks: int) -> None:
    """The gateway must relay what the runtime said (renamed, with the usage chunk hidden from this client)."""

    def expect(ok: bool, what: str) -> None:
        if not ok:
            raise SystemExit(f"{label}: {what}; the answer was:\n{body[:2000]!r}")

    if not stream:
        obj = orjson.loads(body)
        expect(obj.get("model") == model, f"model should be {model!r}")
        expect((obj.get("usage") or {}).get("completion_tokens") == chunks, f"usage should count {chunks} tokens")
        return
    events = [e for e in body.split(b"\n\n") if e]
    expect(events[-1] == b"data: [DONE]", "the stream should end with [DONE]")
    objs = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    content = [o for o in objs if o["choices"] and o["choices"][0]["delta"].get("content")]
    expect(len(content) == chunks, f"the stream should carry {chunks} content chunks")
    expect(all(o.get("model") == model for o in objs), f"every chunk should name {model!r}")
    expect(not any("usage" in o for o in objs), "no usage chunk for a client that did not ask for one")


async def latency_case(
    direct: Target,
    gateways: list[Target],
    *,
    stream: bool,
    requests: int,
    warmup: int,
    upstream_model: str,
    chunks: int,
) -> None:
    """Each round calls every target once, in one of every order in turn (with two targets: ABBA), so that none
    always goes first."""

    def payload(model: str) -> bytes:
        return orjson.dumps({"model": model, "messages": QUESTION, "max_tokens": chunks, "stream": stream})

    models = {direct.label: upstream_model} | {g.label: DEPLOYMENT for g in gateways}
    payloads = {label: payload(model) for label, model in models.items()}
    orders = list(itertools.permutations([direct, *gateways]))
    for i in range(warmup + requests):
        for target in orders[i % len(orders)]:
            elapsed, body, overhead = await call(target, payloads[target.label])
            if i == warmup - 1 or (warmup == 0 and i == 0):
                check_answer(target.label, body, stream, models[target.label], chunks)
            if i >= warmup:
                target.seconds.append(elapsed)
                if overhead is not None:
                    target.overhead_ms.append(float(overhead))


@dataclass
class Throughput:
    label: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]  # process label → CPU seconds during the run ("others": the rest of the machine)
    sent: int  # every request sent, the warm-up included
    settle_s: float = 0.0  # after the last request, until the gateway had written every usage record


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def wait_metered(db: Database, admin: Principal, expected: int, timeout: float = 120) -> float:
    """Seconds until the database holds ``expected`` usage records for the deployment."""
    started = time.perf_counter()
    while True:
        summary = await asyncio.to_thread(usage.usage_summary, db=db, actor=admin)
        if sum(s.requests for s in summary if s.deployment == DEPLOYMENT) >= expected:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"the gateway had not written {expected} usage records after {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def throughput_case(
    target: Target,
    payload: bytes,
    *,
    concurrency: int,
    duration: float,
    procs: dict[str, psutil.Process],
    settle: Callable[[int], Awaitable[float]] | None = None,
) -> Throughput:
    """Closed-loop load for ``duration`` seconds. CPU is counted until ``settle(sent)`` returns (the gateway's
    usage writes trail its answers, and belong to the requests all the same)."""
    latencies: list[float] = []
    errors = sent = 0
    stop_at = 0.0

    async def worker() -> None:
        nonlocal errors, sent
        while time.perf_counter() < stop_at:
            sent += 1
            started = time.perf_counter()
            async with target.session.post(target.url, data=payload, headers=target.headers) as response:
                await response.read()
                if response.status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    # a short warm-up opens all the connections
    stop_at = time.perf_counter() + 0.5
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.clear()
    errors = 0
    before = {label: cpu_seconds(p) for label, p in procs.items()}
    machine_before = machine_busy_seconds()
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    settle_s = await settle(sent) if settle else 0.0
    cpu = {label: cpu_seconds(p) - before[label] for label, p in procs.items()}
    cpu["others"] = max(0.0, machine_busy_seconds() - machine_before - sum(cpu.values()))
    return Throughput(target.label, len(latencies), errors, seconds, latencies, cpu, sent, settle_s)


# ------------------------------------------------------------------------------------------------ report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def print_latency_table(rows: list[tuple[str, Target, Target]]) -> None:
    """One row per case and key kind; ``rows`` holds (case, direct, gateway), the gateway target labelled by its
    key kind."""
    print()
    print(
        f"{'case':<20} {'key':<22} {'n':>5}  {'direct p50':>10} {'direct p99':>10}  {'gateway p50':>11}"
        f" {'gateway p99':>11}  {'added p50':>9} {'added p99':>9}  {'x-cove-overhead-ms p50':>22}"
    )
    for case, direct, gateway in rows:
        d, g = sorted(direct.seconds), sorted(gateway.seconds)
        d50, d99, g50, g99 = percentile(d, 0.5), percentile(d, 0.99), percentile(g, 0.5), percentile(g, 0.99)
        header = f"{statistics.median(gateway.overhead_ms):.3f}" if gateway.overhead_ms else "-"
        print(
            f"{case:<20} {gateway.label:<22} {len(d):>5}  {ms(d50):>10} {ms(d99):>10}  {ms(g50):>11} {ms(g99):>11}"
            f"  {ms(g50 - d50):>9} {ms(g99 - d99):>9}  {header:>22}"
        )
    print("(milliseconds; added = gateway − direct at the same percentile)")


def print_throughput(results: list[Throughput], concurrency: int) -> None:
    print()
    print(f"throughput at concurrency {concurrency}, non-streaming chat:")
    for r in results:
        rate = r.requests / r.seconds
        lat = sorted(r.latencies)
        cpu = ", ".join(f"{label} {sec:.2f} s" for label, sec in r.cpu.items())
        print(
            f"  {r.label:<8} {rate:8.0f} req/s  ({r.requests} in {r.seconds:.1f} s, {r.errors} errors)  "
            f"p50 {ms(percentile(lat, 0.5))} ms  p99 {ms(percentile(lat, 0.99))} ms  CPU: {cpu}"
        )
        if r.label == "gateway" and r.cpu["gateway"] > 0:
            print(
                f"           gateway process: {r.requests / r.cpu['gateway']:.0f} req per CPU-second "
                f"({r.cpu['gateway'] / (r.seconds + r.settle_s):.2f} cores busy; its last usage records were "
                f"written {r.settle_s:.2f} s after the last answer, CPU counted until then)"
            )


# ------------------------------------------------------------------------------------------------ main


async def measure(
    args: argparse.Namespace,
    db: Database,
    admin: Principal,
    endpoint: str,
    secrets: dict[str, str],
    server: CoveServer,
    replica_pid: int,
) -> int:
    """Runs every case and returns how many requests went through the gateway."""
    gateway_url = server.settings.gateway_url + "/v1/chat/completions"
    json_headers = {"content-type": "application/json"}
    auth = {kind: {**json_headers, "authorization": f"Bearer {secret}"} for kind, secret in secrets.items()}
    upstream_model = DEPLOYMENT  # custom images serve --model {name}
    sent = 0
    rows = []
    for case, stream in (("chat, non-streaming", False), ("chat, streaming", True)):
        async with contextlib.AsyncExitStack() as stack:
            s_direct = await stack.enter_async_context(client(1))
            direct = Target("direct", endpoint + "/v1/chat/completions", json_headers, s_direct)
            gateways = [
                Target(kind, gateway_url, headers, await stack.enter_async_context(client(1)))
                for kind, headers in auth.items()
            ]
            started = time.perf_counter()
            await latency_case(
                direct,
                gateways,
                stream=stream,
                requests=args.requests,
                warmup=args.warmup,
                upstream_model=upstream_model,
                chunks=args.chunks,
            )
            per_target = args.requests + args.warmup
            sent += len(gateways) * per_target
            print(f"{case}: {(1 + len(gateways)) * per_target} requests in {time.perf_counter() - started:.1f} s")
            rows += [(case, direct, gateway) for gateway in gateways]
    print_latency_table(rows)

    procs = {
        "gateway": psutil.Process(server.pid),
        "runtime": psutil.Process(replica_pid),
        "client": psutil.Process(),
    }
    await wait_metered(db, admin, sent)  # the latency cases' usage writes must not land in the throughput CPU

    async def settle(sent_now: int) -> float:
        return await wait_metered(db, admin, sent + sent_now)

    results = []
    for label, url, headers, model in (
        ("gateway", gateway_url, auth[ADMIN_KEY], DEPLOYMENT),
        ("direct", endpoint + "/v1/chat/completions", json_headers, upstream_model),
    ):
        payload = orjson.dumps({"model": model, "messages": QUESTION, "max_tokens": args.chunks})
        async with client(args.concurrency) as session:
            result = await throughput_case(
                Target(label, url, headers, session),
                payload,
                concurrency=args.concurrency,
                duration=args.duration,
                procs=procs,
                settle=settle if label == "gateway" else None,
            )
        if label == "gateway":
            sent += result.sent
        results.append(result)
    print_throughput(results, args.concurrency)
    return sent


def replica_pid_of(server: CoveServer) -> int:
    for child in psutil.Process(server.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if str(MOCK) in child.cmdline():
                return child.pid
    raise SystemExit("the mock runtime is not a child of the server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per target and case")
    parser.add_argument("--warmup", type=int, default=200, help="discarded requests per target and case")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per streamed answer")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each throughput run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary COVE_HOME (logs, database)")
    parser.add_argument(
        "--limits",
        choices=("off", "memory", "redis"),
        default="off",
        help="add a rate-limited key, counted in the gateway's process or in a redis-server started here",
    )
    parser.add_argument(
        "--traces",
        action="store_true",
        help="traces on: the server sends every request's spans to an OTLP/HTTP sink started here",
    )
    parser.add_argument(
        "--cprofile", type=Path, help="run the server under cProfile, write the stats here (inflates every number)"
    )
    args = parser.parse_args()
    if args.requests < 1 or args.warmup < 1:
        parser.error("--requests and --warmup must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the Hub

    with cove_home(args.keep, "cove-bench-overhead-") as home, contextlib.ExitStack() as services:
        settings = bench_settings(home)
        db = open_studio(settings)
        admin = users.first_admin(db=db)
        secrets = set_up(db, settings, admin, args.chunks, limited=args.limits != "off")
        env = {"COVE_REDIS_URL": services.enter_context(redis_server(home))} if args.limits == "redis" else {}
        if args.limits != "off":
            print(f"rate limits counted {'in a redis-server on loopback' if env else 'in the gateway process'}")
        if args.traces:
            env["COVE_OTLP_ENDPOINT"] = services.enter_context(otlp_sink())
            print(f"traces on (every request sampled), sent to {env['COVE_OTLP_ENDPOINT']}")
        server = CoveServer(settings, cprofile=args.cprofile.resolve() if args.cprofile else None, env=env)
        leftovers: list[str] = []
        try:
            started = time.perf_counter()
            server.start()
            dep = wait_ready(db, admin, DEPLOYMENT, 120, server.log_path)
            print(f"cove server pid {server.pid} on {settings.gateway_url}; replica at {dep.endpoints[0]} ready")
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            print(
                f"  ({time.perf_counter() - started:.1f} s after start; Python {sys.version.split()[0]}; "
                f"{os.cpu_count()} CPUs; load average {load})"
            )
            sent = asyncio.run(measure(args, db, admin, dep.endpoints[0], secrets, server, replica_pid_of(server)))
        finally:
            leftovers = server.stop()
        summary = usage.usage_summary(db=db, actor=admin)
        metered = sum(s.requests for s in summary if s.deployment == DEPLOYMENT)
        print(f"\nusage metered: {metered} records for {sent} requests sent through the gateway")
        db.dispose()
        if leftovers:
            print("LEFT BEHIND (killed now): " + "; ".join(leftovers))
            raise SystemExit(1)
        print("server stopped with SIGTERM; no process left behind")
        if args.cprofile:
            import pstats

            print(f"\ncProfile of the server (main thread: the gateway's event loop), {args.cprofile}:")
            pstats.Stats(str(args.cprofile)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
