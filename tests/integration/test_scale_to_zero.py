"""Scale to zero, with real parts: the gateway served by uvicorn, the controller on its thread with the local
backend, and fake runtimes as real processes. A minimum-0 deployment sleeps without a claim on its pool, wakes for
the requests held at the gateway (all answered, streamed ones told of the wake first), and sleeps again once idle;
a wake that takes too long, or that the pool has no room for, is answered 503 with Retry-After."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from studio.backends.local import LocalBackend
from studio.controller import Controller
from studio.db import Database, utcnow
from studio.gateway.app import Gateway
from studio.models import ApiKeyCreate, DeploymentCreate, Pool
from studio.services import deployments, keys, pools
from studio.services.pools import claims_in
from studio.settings import Settings
from studio.values import Autoscale, PoolBase, Resources
from tests.conftest import make_settings
from tests.integration.conftest import GatewayServer, add_fake_image, wait_until
from tests.people import ADMIN

pytestmark = pytest.mark.runtime


def _sleeper(db: Database, model: str, image: str, *, idle_s: float = 60) -> None:
    deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=DeploymentCreate(
            name="nap",
            model=model,
            image=image,
            resources=Resources(cpu=0.5, memory_mib=256),
            autoscale=Autoscale(min_replicas=0, max_replicas=1, idle_s=idle_s),
        ),
    )


def _claimed(db: Database) -> int:
    """The replicas deployment ``nap`` holds of its pool, as admission counts them."""
    with db.session() as session:
        pool = session.exec(select(Pool).where(Pool.name == "local")).one()
        return sum(c.replicas for c in claims_in(session, pool_id=pool.id or 0) if c.owner == "nap")


class _Parts:
    """The gateway and a controller whose wall clock the test moves (the idle window is jumped, not slept)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.now: list[datetime | None] = [None]
        self.gateway = GatewayServer(settings, db)
        self.controller = Controller(
            db=db, backend=LocalBackend(settings), settings=settings, load=self._load, wall=self._wall
        )

    def _load(self, name: str) -> float:
        app: Gateway = self.gateway.app
        return app.load(name)

    def _wall(self) -> datetime:
        return self.now[0] or utcnow()

    def __enter__(self) -> _Parts:
        self.gateway.__enter__()
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop(stop_workloads=True)
        self.gateway.__exit__()


async def _ask_all(url: str, key: str, count: int) -> list[tuple[int, str, bool]]:
    """``count`` requests at once, every other one streamed: (status, body, whether streamed)."""
    headers = {"Authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, str, bool]:
        stream = i % 2 == 0
        body = {"model": "nap", "messages": [{"role": "user", "content": f"hi {i}"}], "stream": stream}
        async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
            text = (await response.aread()).decode()
            return response.status_code, text, stream

    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return await asyncio.gather(*(one(client, i) for i in range(count)))


def test_a_sleeping_deployment_wakes_for_held_requests_and_sleeps_again_when_idle(
    tmp_path: Path, db: Database, stub_model: str
) -> None:
    settings = make_settings(tmp_path / "cove")
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="wake")).key
    _sleeper(db, stub_model, add_fake_image(db, "scripted_runtime.py"))
    assert deployments.get_deployment(actor=ADMIN, db=db, name="nap").replicas == 0
    assert _claimed(db) == 0  # created asleep: it holds nothing of the pool
    with _Parts(settings, db) as parts:
        answers = asyncio.run(_ask_all(parts.gateway.url, key, 50))
        assert [status for status, _, _ in answers] == [200] * 50
        for _, text, streamed in answers:
            if streamed:  # told of the wake first, as SSE comments an OpenAI client skips; then the answer
                assert text.startswith(": waking nap — starting a replica\n\n"), text[:200]
                assert text.index("data: ") > text.index(": waking nap"), text
                assert "hello from" not in text.split("data: ")[0]
            else:
                assert "hello from" in text
                assert not text.startswith(":")
        assert _claimed(db) == 1
        metrics = httpx.get(parts.gateway.url + "/metrics").text
        assert 'cove_gateway_cold_start_seconds_count{deployment="nap"} 50.0' in metrics
        woke = wait_until(
            lambda: (d := deployments.get_deployment(actor=ADMIN, db=db, name="nap")).cold_start_s is not None and d,
            timeout=10,
            what="the cold start to be recorded on the deployment",
        )
        assert 0 < (woke.cold_start_s or 0) < 60
        wait_until(
            lambda: deployments.get_deployment(actor=ADMIN, db=db, name="nap").last_request_at is not None,
            timeout=10,
            what="the gateway to record the last request",
        )
        parts.now[0] = utcnow() + timedelta(seconds=61)  # a minute without a request passes
        wait_until(
            lambda: deployments.get_deployment(actor=ADMIN, db=db, name="nap").status == "Stopped",
            timeout=30,
            what="the idle deployment to sleep",
        )
        assert deployments.get_deployment(actor=ADMIN, db=db, name="nap").replicas == 0
        assert _claimed(db) == 0  # its claim is given back: admission sees the room


def test_a_wake_past_the_timeout_is_a_503_with_retry_after(tmp_path: Path, db: Database, stub_model: str) -> None:
    settings = make_settings(tmp_path / "cove", wake_timeout_s=1.5)
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="wake")).key
    _sleeper(db, stub_model, add_fake_image(db, "never_ready_runtime.py"))
    with _Parts(settings, db) as parts:
        response = httpx.post(
            parts.gateway.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "nap", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "10"
        error = response.json()["error"]
        assert error["code"] == "waking"
        assert error["message"].startswith("deployment 'nap' is waking from zero replicas (")
        assert "not ready within 1.5 s" in error["message"]


def test_a_wake_the_pool_has_no_room_for_is_refused_with_the_reason(
    tmp_path: Path, db: Database, stub_model: str
) -> None:
    settings = make_settings(tmp_path / "cove")
    pools.sync_detected_pools(
        db=db, cluster="default", detected=[PoolBase(name="local", cpu_cores=0.25, memory_mib=8192)]
    )
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="wake")).key
    _sleeper(db, stub_model, add_fake_image(db, "scripted_runtime.py"))  # 0.5 cores a replica: asleep, it fits
    with _Parts(settings, db) as parts:
        response = httpx.post(
            parts.gateway.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "nap", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        error = response.json()["error"]
        assert error["code"] == "wake_refused"
        assert error["message"].startswith("no room in pool 'local' to wake it: ")


def test_requests_that_arrive_as_it_falls_asleep_are_answered_never_sent_to_a_stopped_replica(
    tmp_path: Path, db: Database, stub_model: str
) -> None:
    """Going to sleep, a deployment leaves the gateways' routes before its replica stops: requests sent one after
    another while it falls asleep (and, its clock past the idle window, falls asleep again after every wake) are all
    answered, by the replica still running or after a wake; none meets a stopped replica (a 502)."""
    settings = make_settings(tmp_path / "cove")
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="wake")).key
    _sleeper(db, stub_model, add_fake_image(db, "scripted_runtime.py"))
    body = {"model": "nap", "messages": [{"role": "user", "content": "hi"}]}
    with (
        _Parts(settings, db) as parts,
        httpx.Client(base_url=parts.gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client,
    ):
        assert client.post("/v1/chat/completions", json=body).status_code == 200  # woken
        statuses: list[int] = []
        counts = [1]  # its replicas as each request left it: every 1 → 0 is a fall asleep, every 0 → 1 a wake

        def fell_asleep_twice() -> bool:
            parts.now[0] = utcnow() + timedelta(seconds=61)  # the controller sees it idle, whatever is asked
            statuses.append(client.post("/v1/chat/completions", json=body).status_code)
            counts.append(deployments.get_deployment(actor=ADMIN, db=db, name="nap").replicas)
            return sum(1 for pair in itertools.pairwise(counts) if pair == (1, 0)) >= 2

        wait_until(fell_asleep_twice, timeout=60, what="the deployment to fall asleep under requests")
        assert set(statuses) == {200}, statuses
