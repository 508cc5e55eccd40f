"""Time from ``deploy create`` to the first streamed token through the gateway, for the demo model.

In a throwaway COVE_HOME: builds the demo model (not timed), registers it as ``demo-chat``, creates an API key and
starts the real ``cove server``. Each run then creates the deployment ``demo`` (default image and resources, as
``cove deploy create demo --model demo-chat`` does) and, at the same time, polls the database until the deployment
is Ready and the gateway with a streamed chat request until the first content chunk arrives. Between runs the
deployment is deleted and the script waits until it is gone. Prints each run and the medians.

    .venv/bin/python benchmarks/deploy_first_token.py [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
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
from studio.services import deployments, keys, models
from studio.settings import Settings

DEPLOYMENT = "demo"
MODEL = "demo-chat"
DB_POLL_S = 0.02
GATEWAY_POLL_S = 0.05


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
        dep = await asyncio.to_thread(deployments.get_deployment, db=db, name=DEPLOYMENT)
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
    await asyncio.to_thread(deployments.create_deployment, db=db, data=DeploymentCreate(name=DEPLOYMENT, model=MODEL))
    created = time.perf_counter() - started
    ready, (routed, first, attempts, reply) = await asyncio.gather(
        wait_ready(db, started, log, timeout), first_token(settings, key, started, timeout)
    )
    return Run(created, ready, routed, first, attempts, reply)


def delete_and_wait(db: Database, settings: Settings, timeout: float = 120) -> float:
    started = time.perf_counter()
    deployments.delete_deployment(db=db, name=DEPLOYMENT)
    while time.perf_counter() - started < timeout:
        try:
            deployments.get_deployment(db=db, name=DEPLOYMENT)
        except NotFound:
            gone = time.perf_counter() - started
            time.sleep(settings.routes_refresh_s + 0.2)  # the gateway forgets the old route too
            return gone
        time.sleep(0.05)
    raise SystemExit(f"deployment {DEPLOYMENT} was not gone {timeout:.0f} s after delete")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300, help="seconds one run may take")
    parser.add_argument("--keep", action="store_true", help="keep the temporary COVE_HOME (logs, database)")
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
        models.register_built(db=db, name=MODEL, folder=folder, repo_id="cove/demo-chat", cache_dir=settings.models_dir)
        key = keys.create_key(db=db, data=ApiKeyCreate(name="bench")).key
        print(f"demo model built and registered in {time.perf_counter() - started:.1f} s (not timed below)")
        server = CoveServer(settings)
        runs: list[Run] = []
        leftovers: list[str] = []
        try:
            server.start()
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
