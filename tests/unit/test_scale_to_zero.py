"""Scale to zero, the pure parts: when the controller puts a minimum-0 deployment to sleep or wakes it, and how a
wake's shared state moves its held requests on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from studio.controller import sleep_or_wake
from studio.gateway.waking import Wake, phase_of
from studio.services.deployments import WakeView
from studio.values import Autoscale, Route, Status

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
NAPS = Autoscale(min_replicas=0, max_replicas=2, idle_s=60)


def decide(
    *, replicas: int = 1, inflight: float = 0, idle: float = 0, wake: bool = False, auto: Autoscale = NAPS
) -> int | None:
    return sleep_or_wake(
        auto=auto, replicas=replicas, inflight=inflight, last_active=NOW - timedelta(seconds=idle), wake_wanted=wake,
        now=NOW,
    )  # fmt: skip


def test_an_awake_deployment_sleeps_once_idle_for_its_window() -> None:
    assert decide(idle=59.9) is None  # still inside the window: the recommendation decides (floored at 1)
    assert decide(idle=60) == 0
    assert decide(idle=3600, inflight=1) is None  # a request in flight keeps it awake however old the last one


def test_a_sleeping_deployment_wakes_only_when_asked() -> None:
    assert decide(replicas=0, idle=3600) == 0
    assert decide(replicas=0, wake=True) == 1
    assert decide(replicas=0, inflight=3) == 1  # requests held in this gateway count as asking


def test_a_minimum_above_zero_never_sleeps() -> None:
    assert decide(idle=10**6, auto=Autoscale(min_replicas=1, max_replicas=2, idle_s=1)) is None


def view(**changes: object) -> WakeView:
    base = {"sleeps": True, "replicas": 0, "status": Status.STOPPED, "message": "", "wake_refused": "", "route": None}
    return WakeView(**base | changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seen", "words"),
    [
        (view(), "starting a replica"),
        (
            view(replicas=1, status=Status.PENDING, message="waiting for a GPU"),
            "starting a replica (waiting for a GPU)",
        ),
        (view(replicas=1, status=Status.STARTING), "loading weights"),
        (view(replicas=1, status=Status.FAILED, message="exit 1\nlast lines"), "its replica is failing: exit 1"),
    ],
)
def test_the_phase_in_words(seen: WakeView, words: str) -> None:
    assert phase_of(seen) == words


def test_a_wake_tells_its_held_requests_of_each_change_and_ends_ready() -> None:
    wake = Wake("nap", started=0.0)
    first = wake.changed
    assert not wake.observe(view())  # the phase it began with: nothing new to tell
    assert wake.observe(view(replicas=1, status=Status.STARTING))
    assert first.is_set()
    assert not wake.changed.is_set()
    assert wake.phase == "loading weights"
    assert not wake.over
    route = Route("nap", "m", ("http://127.0.0.1:9",))
    assert wake.observe(view(replicas=1, status=Status.READY, route=route))
    assert wake.over
    assert wake.route == route
    assert not wake.refused


def test_a_wake_ends_refused_with_the_pools_reason_or_when_the_deployment_goes() -> None:
    wake = Wake("nap", started=0.0)
    assert wake.observe(view(wake_refused="no room in pool 'local'"))
    assert wake.over
    assert wake.refused == "no room in pool 'local'"
    gone = Wake("nap", started=0.0)
    assert gone.observe(None)
    assert gone.refused == "deployment 'nap' was deleted while it was waking"
    unslept = Wake("nap", started=0.0)
    assert unslept.observe(view(sleeps=False))
    assert "scaled to 0 by hand" in unslept.refused
