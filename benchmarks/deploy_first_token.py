"""Time from ``deploy create`` to the first streamed token through the gateway, for the demo model.

In a throwaway COVE_HOME: builds the demo model (not timed), registers it as ``demo-chat``, creates an API key and
starts the real ``cove server``. Each run then creates the deployment ``demo`` (default image and resources, as
``cove deploy create demo --model demo-chat`` does) and, at the same time, polls the database until the deployment
is Ready and the gateway with a streamed chat request until the first content chunk arrives. Between runs the
deployment is deleted and the script waits until it is gone. Prints each run and the medians.

With ``--from-zero`` it times a cold start instead: the deployment is made once, autoscaled with a minimum of 0 (so
it is created asleep), and each run sends one streamed request to the sleeping deployment, which the gateway holds
while the controller wakes it; the time is from that request to its first content chunk (what
``cove_gateway_cold_start_seconds`` measures), with when the first ``: waking`` comment arrived. Between runs it is put
back to sleep as the controller does after its idle window.

    .venv/bin/python benchmarks/deploy_first_token.py [--runs 3] [--keep] [--from-zero]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from gateway_overhead import CoveServer, bench_settings, cove_home, tail  # a sibling script

from studio.bootstrap import open_studio
from studio.db import Database
from studio.errors import NotFound
from studio.models import ApiKeyCreate, DeploymentCreate
from studio.services import deployments, keys, models, users
from studio.settings import Settings
from studio.values import Autoscale, Principal

DEPLOYMENT = "demo"
MODEL = "demo-chat"
DB_POLL_S = 0.02
GATEWAY_POLL_S = 0.05


@functools.cache
def admin_of(db: Database) -> Principal:
    """Who the benchmark acts as: the studio's first admin (read once)."""
    return users.first_admin(db=db)


@dataclass
class Run:
    create_s: float  # the create_deployment call itself
    ready_s: float  # until the database says Ready
    routed_s: float  # until the gateway answered 200 (headers; the runtime has taken the request)
    first_token_s: float  # until the first content chunk arrived through the gateway
    attempts: int  # gateway requests sent, the successful one included
    reply: str

    @property
    def after_ready_s(self) -> float:
        return self.first_token_s - self.ready_s


async def wait_ready(db: Database, started: float, log: Path, timeout: float) -> float:
    while True:
        dep = await asyncio.to_thread(deployments.get_deployment, actor=admin_of(db), db=db, name=DEPLOYMENT)
        now = time.perf_counter()
        if dep.status == "Ready":
            return now - started
        if dep.status == "Failed" or now - started > timeout:
            raise SystemExit(f"deployment {DEPLOYMENT} is {dep.status}: {dep.message}\nserver log:\n{tail(log)}")
        await asyncio.sleep(DB_POLL_S)


async def first_token(settings: Settings, key: str, started: float, timeout: float) -> tuple[float, float, int, str]:
    """Streamed chat requests until one answers: when it answered 200, when its first content chunk came,
    the tries, the reply."""
    url = settings.gateway_url + "/v1/chat/completions"
    body = orjson.dumps(
        {
            "model": DEPLOYMENT,
            "messages": [{"role": "user", "content": "What is Cove?"}],
            "stream": True,
            "max_tokens": 32,
        }
    )
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    attempts = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        while True:
            attempts += 1
            async with session.post(url, data=body, headers=headers) as response:
                if response.status == 200:
                    routed = time.perf_counter() - started
                    first: float | None = None
                    parts = []
                    async for line in response.content:
                        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                            continue
                        event = orjson.loads(line[6:])
                        if "error" in event:
                            raise SystemExit(f"the stream failed: {event['error']}")
                        for choice in event.get("choices") or []:
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                if first is None:
                                    first = time.perf_counter() - started
                                parts.append(content)
                    if first is None:
                        raise SystemExit("the gateway answered 200 but streamed no content")
                    return routed, first, attempts, "".join(parts)
                if response.status not in (404, 502, 503):  # not deployed / not ready / replica gone yet
                    raise SystemExit(f"the gateway answered {response.status}: {await response.text()}")
                await response.read()
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"no answer through the gateway within {timeout:.0f} s")
            await asyncio.sleep(GATEWAY_POLL_S)


async def one_run(db: Database, settings: Settings, key: str, log: Path, timeout: float) -> Run:
    started = time.perf_counter()
    await asyncio.to_thread(
        deployments.create_deployment, actor=admin_of(db), db=db, data=DeploymentCreate(name=DEPLOYMENT, model=MODEL)
    )
    created = time.perf_counter() - started
    ready, (routed, first, attempts, reply) = await asyncio.gather(
        wait_ready(db, started, log, timeout), first_token(settings, key, started, timeout)
    )
    return Run(created, ready, routed, first, attempts, reply)


def delete_and_wait(db: Database, settings: Settings, timeout: float = 120) -> float:
    started = time.perf_counter()
    deployments.delete_deployment(actor=admin_of(db), db=db, name=DEPLOYMENT)
    while time.perf_counter() - started < timeout:
        try:
            deployments.get_deployment(actor=admin_of(db), db=db, name=DEPLOYMENT)
        except NotFound:
            gone = time.perf_counter() - started
            time.sleep(settings.routes_refresh_s + 0.2)  # the gateway forgets the old route too
            return gone
        time.sleep(0.05)
    raise SystemExit(f"deployment {DEPLOYMENT} was not gone {timeout:.0f} s after delete")


async def held_to_first_token(settings: Settings, key: str, timeout: float) -> tuple[float, float, str]:
    """One streamed request to the sleeping deployment: when its first waking comment came, when its first content
    chunk came (seconds from sending it), and the reply."""
    body = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "What is Cove?"}], "stream": True}
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    started = time.perf_counter()
    told: float | None = None
    first: float | None = None
    parts = []
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.post(
            settings.gateway_url + "/v1/chat/completions",
            data=orjson.dumps({**body, "max_tokens": 32}),
            headers=headers,
        ) as response,
    ):
        if response.status != 200:
            raise SystemExit(f"the gateway answered {response.status}: {await response.text()}")
        async for line in response.content:
            if line.startswith(b": waking") and told is None:
                told = time.perf_counter() - started
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            event = orjson.loads(line[6:])
            if "error" in event:
                raise SystemExit(f"the stream failed: {event['error']}")
            for choice in event.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    first = first if first is not None else time.perf_counter() - started
                    parts.append(content)
    if told is None or first is None:
        raise SystemExit(f"expected a waking comment and content, got told={told} first={first}")
    return told, first, "".join(parts)


def put_to_sleep(db: Database, settings: Settings, timeout: float = 120) -> None:
    """Scale the deployment to 0 as its idle window would, and wait until it and the gateway's route are gone."""
    deployments.autoscale_to(db=db, name=DEPLOYMENT, replicas=0, reason="benchmark: asleep for the next run")
    started = time.perf_counter()
    while deployments.get_deployment(actor=admin_of(db), db=db, name=DEPLOYMENT).status != "Stopped":
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"deployment {DEPLOYMENT} did not stop within {timeout:.0f} s")
        time.sleep(0.05)
    time.sleep(settings.routes_refresh_s + 0.2)  # the gateway forgets the old route too


def from_zero(db: Database, settings: Settings, key: str, runs: int, timeout: float) -> None:
    sleeps = Autoscale(min_replicas=0, max_replicas=1, idle_s=3600)
    deployments.create_deployment(
        actor=admin_of(db), db=db, data=DeploymentCreate(name=DEPLOYMENT, model=MODEL, autoscale=sleeps)
    )
    time.sleep(settings.routes_refresh_s + 0.2)  # the gateway learns it sleeps (rather than does not exist)
    print(f"{'run':>3}  {'first waking comment':>20}  {'held request → first token':>26}")
    colds = []
    for i in range(runs):
        told, first, reply = asyncio.run(held_to_first_token(settings, key, timeout))
        colds.append(first)
        print(f"{i + 1:>3}  {told:>19.3f}s  {first:>25.2f}s   reply: {reply[:60]!r}")
        put_to_sleep(db, settings)
    print(f"median of {runs}: held request → first token {statistics.median(colds):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300, help="seconds one run may take")
    parser.add_argument("--keep", action="store_true", help="keep the temporary COVE_HOME (logs, database)")
    parser.add_argument(
        "--from-zero", action="store_true", help="time a wake from zero replicas: held request to first token"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the Hub
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    from studio.demo import build_demo_model  # imports torch: only once arguments are fine

    with cove_home(args.keep, "cove-bench-deploy-") as home:
        settings = bench_settings(home)
        db = open_studio(settings)
        started = time.perf_counter()
        folder = build_demo_model(home / "build" / MODEL)
        admin = admin_of(db)
        models.register_built(
            actor=admin, db=db, name=MODEL, folder=folder, repo_id="cove/demo-chat", cache_dir=settings.models_dir
        )
        key = keys.create_key(actor=admin, db=db, data=ApiKeyCreate(name="bench")).key
        print(f"demo model built and registered in {time.perf_counter() - started:.1f} s (not timed below)")
        server = CoveServer(settings)
        runs: list[Run] = []
        leftovers: list[str] = []
        try:
            server.start()
            if args.from_zero:
                print(f"cove server pid {server.pid} on {settings.gateway_url}; a cold start per run:")
                from_zero(db, settings, key, args.runs, args.timeout)
            else:
                print(f"cove server pid {server.pid} on {settings.gateway_url}; seconds from create_deployment:")
                print(
                    f"{'run':>3}  {'create':>7}  {'Ready in DB':>11}  {'gateway 200':>11}  {'first token':>11}"
                    f"  {'Ready→token':>11}  tries"
                )
                for i in range(args.runs):
                    run = asyncio.run(one_run(db, settings, key, server.log_path, args.timeout))
                    runs.append(run)
                    print(
                        f"{i + 1:>3}  {run.create_s:>6.3f}s  {run.ready_s:>10.2f}s  {run.routed_s:>10.2f}s"
                        f"  {run.first_token_s:>10.2f}s"
                        f"  {run.after_ready_s:>10.2f}s  {run.attempts:>5}   reply: {run.reply[:60]!r}"
                    )
                    if i < args.runs - 1:
                        gone = delete_and_wait(db, settings)
                        print(f"     (deleted; gone after {gone:.2f} s)")
        finally:
            leftovers = server.stop()
        db.dispose()
        if runs:
            print(
                f"median of {len(runs)}: Ready in DB {statistics.median(r.ready_s for r in runs):.2f} s, "
                f"gateway 200 {statistics.median(r.routed_s for r in runs):.2f} s, "
                f"first token {statistics.median(r.first_token_s for r in runs):.2f} s "
                f"(Ready→token {statistics.median(r.after_ready_s for r in runs):.2f} s)"
            )
        if leftovers:
            print("LEFT BEHIND (killed now): " + "; ".join(leftovers))
            raise SystemExit(1)
        print("server stopped with SIGTERM; no process left behind")


if __name__ == "__main__":
    main()
