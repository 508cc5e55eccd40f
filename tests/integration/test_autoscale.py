"""Autoscaling: the controller turns requests in flight (as the gateway counts them) into a replica count, scaling
up at once and down only after a quiet window, within the bounds and the pool's capacity."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from studio.backends.local import LocalBackend
from studio.controller import SCALE_DOWN_WINDOW_S, Controller
from studio.db import Database, make_engine, migrate, migrating, utcnow
from studio.models import ApiKeyCreate, DeploymentCreate
from studio.services import deployments, events, keys, pools
from studio.settings import Settings
from studio.values import Autoscale, PoolBase, Resources
from tests.conftest import make_settings
from tests.fakes.backends import InstantBackend
from tests.integration.conftest import GatewayServer, add_fake_image, wait_until
from tests.people import ADMIN


def _autoscaled(db: Database, model: str, image: str | None = None, hi: int = 3) -> None:
    deployments.create_deployment(
        actor=ADMIN,
        db=db,
        data=DeploymentCreate(
            name="auto",
            model=model,
            image=image,
            resources=Resources(cpu=0.5, memory_mib=256),
            autoscale=Autoscale(min_replicas=1, max_replicas=hi, target_inflight=2),
        ),
    )


def test_scales_up_at_once_and_down_after_a_quiet_window(db: Database, settings: Settings, stub_model: str) -> None:
    load, now = {"auto": 5.0}, [1000.0]
    ctl = Controller(
        db=db, backend=InstantBackend(), settings=settings, load=lambda n: load.get(n, 0.0), clock=lambda: now[0]
    )
    _autoscaled(db, stub_model)

    def replicas() -> int:
        return deployments.get_deployment(actor=ADMIN, db=db, name="auto").replicas

    ctl.reconcile()
    assert replicas() == 3  # 5 in flight at 2 each → 3, the maximum
    ctl.reconcile()
    assert deployments.get_deployment(actor=ADMIN, db=db, name="auto").ready_replicas == 3
    load["auto"] = 1.0
    now[0] += SCALE_DOWN_WINDOW_S / 2
    ctl.reconcile()
    assert replicas() == 3  # a lull shorter than the window changes nothing
    now[0] += SCALE_DOWN_WINDOW_S
    ctl.reconcile()
    assert replicas() == 1
    load["auto"] = 0.0
    now[0] += SCALE_DOWN_WINDOW_S * 2
    ctl.reconcile()
    assert replicas() == 1  # never below the minimum
    scaled = [e.message for e in events.list_events(db=db, kind="deployment", name="auto") if e.reason == "Scaled"]
    assert scaled == [
        "replicas 3 → 1: 1 requests in flight, target 2 per replica",
        "replicas 1 → 3: 5 requests in flight, target 2 per replica",
    ]


def test_scaling_up_takes_what_the_pool_has_room_for(db: Database, settings: Settings, stub_model: str) -> None:
    pools.sync_detected_pools(db=db, cluster="default", detected=[PoolBase(name="local", cpu_cores=2, memory_mib=8192)])
    ctl = Controller(db=db, backend=InstantBackend(), settings=settings, load=lambda n: 100.0)
    _autoscaled(db, stub_model, hi=64)
    ctl.reconcile()
    assert (
        deployments.get_deployment(actor=ADMIN, db=db, name="auto").replicas == 4
    )  # 4 × 0.5 cores fill the 2-core pool
    (scaled,) = [e for e in events.list_events(db=db, kind="deployment", name="auto") if e.reason == "Scaled"]
    assert scaled.message == (
        "replicas 1 → 4: 100 requests in flight, target 2 per replica; 50 wanted, the pool has room for 4"
    )
    ctl.reconcile()
    assert deployments.get_deployment(actor=ADMIN, db=db, name="auto").replicas == 4  # full: stays, nothing else breaks


@pytest.mark.runtime
def test_requests_in_flight_at_the_gateway_drive_the_replica_count(
    tmp_path: Path, db: Database, stub_model: str
) -> None:
    settings = make_settings(tmp_path / "cove", upstream_read_timeout_s=4)
    key = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="load")).key
    _autoscaled(db, stub_model, image=add_fake_image(db, "hanging_runtime.py"))
    with GatewayServer(settings, db) as gw:
        ctl = Controller(db=db, backend=LocalBackend(settings), settings=settings, load=gw.app.load)
        ctl.start()
        try:
            wait_until(
                lambda: deployments.get_deployment(actor=ADMIN, db=db, name="auto").status == "Ready",
                timeout=30,
                what="one ready replica",
            )
            codes: list[int] = []

            def ask() -> None:  # the hanging runtime holds each request until the gateway gives up (504)
                codes.append(
                    httpx.post(
                        gw.url + "/v1/chat/completions",
                        timeout=30,
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "auto", "messages": [{"role": "user", "content": "x"}]},
                    ).status_code
                )

            clients = [threading.Thread(target=ask) for _ in range(5)]
            for c in clients:
                c.start()
            dep = wait_until(
                lambda: (d := deployments.get_deployment(actor=ADMIN, db=db, name="auto")).replicas == 3 and d,
                timeout=10,
                what="the controller to scale to 3 for 5 requests in flight",
            )
            assert dep.autoscale == Autoscale(min_replicas=1, max_replicas=3, target_inflight=2)
            for c in clients:
                c.join()
            assert codes == [504] * 5
        finally:
            ctl.stop(stop_workloads=True)


def test_a_restarted_controller_keeps_the_count_its_window_holds(
    db: Database, settings: Settings, stub_model: str
) -> None:
    """A server restarted under load: its gateway counts nothing in flight yet, and the new controller's memory is
    empty, but the scale-down window the old one kept holds the count until it has passed."""
    load, now, wall = {"auto": 5.0}, [1000.0], [utcnow()]

    def controller() -> Controller:
        return Controller(
            db=db, backend=InstantBackend(), settings=settings, load=lambda n: load.get(n, 0.0), clock=lambda: now[0],
            wall=lambda: wall[0],
        )  # fmt: skip

    def replicas() -> int:
        return deployments.get_deployment(actor=ADMIN, db=db, name="auto").replicas

    def later(seconds: float) -> None:
        now[0] += seconds
        wall[0] += timedelta(seconds=seconds)

    _autoscaled(db, stub_model)
    controller().reconcile()
    assert replicas() == 3
    later(SCALE_DOWN_WINDOW_S / 2)
    load["auto"] = 0.0  # restarted: nothing in flight at the new gateway yet
    now[0] = 5.0  # a new process: its monotonic clock has nothing to do with the old one's
    restarted = controller()
    restarted.reconcile()
    assert replicas() == 3
    later(SCALE_DOWN_WINDOW_S / 2 + 1)
    restarted.reconcile()
    assert replicas() == 1  # the window has passed: now the quiet counts


def test_the_kept_window_goes_with_a_downgrade_and_comes_back_empty(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        migrate(engine)
        assert "scale_window" in {c["name"] for c in sa.inspect(engine).get_columns("deployments")}
        with migrating(engine) as config:
            command.downgrade(config, "0020")
        assert "scale_window" not in {c["name"] for c in sa.inspect(engine).get_columns("deployments")}
        migrate(engine)
        assert "scale_window" in {c["name"] for c in sa.inspect(engine).get_columns("deployments")}
    finally:
        engine.dispose()
