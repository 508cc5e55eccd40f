"""Which replica serves a request: fewest requests in flight, ties in turn, endpoints that refused skipped a while."""

from __future__ import annotations

import pytest

from studio.gateway.metrics import GatewayMetrics
from studio.gateway.proxy import Upstream
from studio.gateway.routes import DOWN_FOR_S, RouteTable, choose_endpoint
from studio.runtimes import upstream_key
from studio.values import Route

A, B, C = "http://127.0.0.1:41001", "http://127.0.0.1:41002", "http://127.0.0.1:41003"
CHAT = Route("chat", "Qwen/Qwen2.5-0.5B-Instruct", (A, B))


# ------------------------------------------------------------------------------------------------ choose_endpoint


@pytest.mark.parametrize("start", [0, 1, 2, 7])
def test_the_endpoint_with_fewest_requests_in_flight_wins_whatever_the_start(start: int) -> None:
    assert choose_endpoint([A, B, C], {A: 2, B: 1, C: 3}, start) == B


@pytest.mark.parametrize(("start", "chosen"), [(0, A), (1, B), (2, C), (3, A), (5, C)])
def test_ties_go_round_robin_from_start(start: int, chosen: str) -> None:
    assert choose_endpoint([A, B, C], {}, start) == chosen


@pytest.mark.parametrize(("start", "chosen"), [(0, B), (1, B), (2, C)])
def test_ties_among_the_least_loaded_go_to_the_first_from_start(start: int, chosen: str) -> None:
    assert choose_endpoint([A, B, C], {A: 1, B: 0, C: 0}, start) == chosen


def test_endpoints_without_a_count_carry_no_load() -> None:
    assert choose_endpoint([A, B], {A: 1, "http://gone:1": 0}, 0) == B


# ------------------------------------------------------------------------------------------------ RouteTable


def test_idle_endpoints_take_turns() -> None:
    table = RouteTable()

    assert [table.pick(CHAT, 0.0) for _ in range(4)] == [B, A, B, A]


def test_pick_prefers_the_endpoint_with_fewer_requests_in_flight() -> None:
    table = RouteTable()
    table.begin("chat", A)

    assert [table.pick(CHAT, 0.0) for _ in range(3)] == [B, B, B]


def test_an_endpoint_marked_down_is_skipped_until_down_for_s_has_passed() -> None:
    table = RouteTable()
    table.begin("chat", B)  # B is busier: A would win if it were up
    table.mark_down(A, now=100.0)

    assert table.pick(CHAT, 100.0) == B
    assert table.pick(CHAT, 100.0 + DOWN_FOR_S - 0.001) == B
    assert table.pick(CHAT, 100.0 + DOWN_FOR_S) == A


def test_no_endpoint_is_picked_when_all_are_down() -> None:
    table = RouteTable()
    table.mark_down(A, now=10.0)
    table.mark_down(B, now=10.5)

    assert table.pick(CHAT, 11.0) is None
    assert table.pick(CHAT, 12.0) == A
    assert table.pick(Route("empty", "m", ()), 0.0) is None


def test_excluded_endpoints_are_not_picked() -> None:
    table = RouteTable()
    table.begin("chat", B)

    assert table.pick(CHAT, 0.0, exclude=frozenset({A})) == B
    assert table.pick(CHAT, 0.0, exclude=frozenset({A, B})) is None


def test_begin_and_end_count_requests_per_endpoint_and_per_deployment() -> None:
    table = RouteTable()
    table.begin("chat", A)
    table.begin("chat", A)
    table.begin("chat", B)
    table.begin("embed", C)

    assert (table.inflight, table.inflight_by_deployment) == ({A: 2, B: 1, C: 1}, {"chat": 3, "embed": 1})

    table.end("chat", A)
    table.end("embed", C)

    assert (table.inflight, table.inflight_by_deployment) == ({A: 1, B: 1, C: 0}, {"chat": 2, "embed": 0})


def test_replace_swaps_the_routes_and_forgets_down_marks_of_endpoints_that_are_gone() -> None:
    table = RouteTable()
    table.replace([CHAT])
    table.mark_down(A, now=0.0)
    table.mark_down(B, now=1.0)
    moved = Route("chat", "Qwen/Qwen2.5-0.5B-Instruct", (B, C))
    embed = Route("embed", "bge", (A,))

    table.replace([moved])

    assert table.routes == {"chat": moved}
    assert table.down_until == {B: 1.0 + DOWN_FOR_S}

    table.replace([moved, embed])  # A is back (a new replica on the same port): not down

    assert table.pick(embed, 0.5) == A


def test_requests_to_model_servers_carry_their_deployments_key_and_only_theirs() -> None:
    up = Upstream(RouteTable(), GatewayMetrics(), secret="studio key")
    assert up.headers_for("chat") == {
        "content-type": "application/json",
        "authorization": f"Bearer {upstream_key('studio key', 'chat')}",
    }
    assert up.headers_for("embed")["authorization"] != up.headers_for("chat")["authorization"]
    assert Upstream(RouteTable(), GatewayMetrics()).headers_for("chat") == {"content-type": "application/json"}
