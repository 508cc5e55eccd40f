"""`cove bench`'s load generator against the demo model on `transformers serve`, through the real gateway: a short
fixed-concurrency step completes without errors, every request's first token comes before its end, and the output
tokens it counts are the ones the gateway metered from the runtime's own usage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from studio.benchmark import Load, Record, Workload
from studio.db import Database
from studio.loadgen import Prompter, Step, StepRun, Target
from studio.models import ApiKeyCreate
from studio.services import keys, usage
from studio.settings import Settings
from tests.integration.conftest import CoveServer, deploy, register_demo, status_of, wait_until
from tests.people import ADMIN

REQUESTS, CONCURRENCY = 6, 2


@pytest.fixture
def demo_behind_gateway(settings: Settings, db: Database, demo_folder: Path, tmp_path: Path) -> Iterator[str]:
    """The demo model deployed as ``demo`` and Ready behind a running `cove server`; yields an API key."""
    register_demo(db, settings, demo_folder)
    server = CoveServer(settings, tmp_path / "server.log").start()
    try:
        deploy(db, "demo", "demo-chat")
        wait_until(lambda: status_of(db, "demo", "Ready"), timeout=120, what="the demo deployment to be Ready")
        yield keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="bench")).key
    finally:
        server.stop()


async def one_step(url: str, key: str, tokenizer: Path) -> list[Record]:
    workload = Workload(input_len=16, output_len=8)
    target = Target(url=url, model="demo", api_key=key)
    async with aiohttp.ClientSession() as session:
        step = Step(Load(concurrency=CONCURRENCY), REQUESTS)
        run = StepRun(session, target, Prompter(workload, str(tokenizer)), step)
        await run.run(lambda line: None)
    return run.records


@pytest.mark.runtime
def test_a_concurrency_step_against_the_demo_model_through_the_gateway(
    settings: Settings, db: Database, demo_folder: Path, demo_behind_gateway: str
) -> None:
    records = asyncio.run(one_step(settings.gateway_url, demo_behind_gateway, demo_folder))

    assert [r.error for r in records] == [None] * REQUESTS
    assert all(0 < r.ttft < r.e2el for r in records)
    assert all(r.input_tokens > 0 and r.output_tokens > 0 for r in records)

    def metered() -> usage.UsageSummary | None:
        rows = [s for s in usage.usage_summary(db=db, actor=ADMIN) if s.deployment == "demo"]
        return rows[0] if rows and rows[0].served == REQUESTS else None

    row = wait_until(metered, timeout=30, what="the gateway to meter every request")
    assert row.completion_tokens == sum(r.output_tokens for r in records)
    assert row.prompt_tokens == sum(r.input_tokens for r in records)
