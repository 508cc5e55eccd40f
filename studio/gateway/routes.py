"""Which replica serves a request: least outstanding requests among a deployment's ready endpoints."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from studio.values import Route

DOWN_FOR_S = 2.0  # an endpoint that refused a connection is skipped this long (the controller notices meanwhile)


def choose_endpoint(endpoints: Sequence[str], inflight: Mapping[str, int], start: int) -> str:
    """The endpoint with the fewest requests in flight; ties go round-robin from ``start``."""
    n = len(endpoints)
    best, best_load = endpoints[start % n], inflight.get(endpoints[start % n], 0)
    for i in range(1, n):
        candidate = endpoints[(start + i) % n]
        load = inflight.get(candidate, 0)
        if load < best_load:
            best, best_load = candidate, load
    return best


def choose_version(route: Route, draw: float) -> Route:
    """The route a request goes by: ``route``'s canary when ``draw`` (uniform in [0, 1)) falls in its share, else
    ``route`` itself. The canary keeps ``route``'s name (clients, metrics and usage see the deployment they
    called), with its own replicas, upstream model and version."""
    if route.canary is None or draw * 100 >= route.canary_share:
        return route
    return replace(route.canary, name=route.name, created=route.created)


@dataclass
class RouteTable:
    """Routes by deployment name, with the gateway's own count of requests in flight."""

    routes: dict[str, Route] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)  # per endpoint
    inflight_by_deployment: dict[str, int] = field(default_factory=dict)
    down_until: dict[str, float] = field(default_factory=dict)
    turn: int = 0
    draws: random.Random = field(default_factory=random.Random)  # seeded by tests that want one exact split

    def replace(self, routes: Sequence[Route]) -> None:
        self.routes = {r.name: r for r in routes}
        live = {e for r in routes for e in r.endpoints}
        self.down_until = {e: t for e, t in self.down_until.items() if e in live}

    def pick(self, route: Route, now: float, *, exclude: frozenset[str] = frozenset()) -> str | None:
        candidates = [e for e in route.endpoints if e not in exclude and self.down_until.get(e, 0.0) <= now]
        if not candidates:
            return None
        self.turn += 1
        return choose_endpoint(candidates, self.inflight, self.turn)

    def split(self, route: Route) -> Route:
        """Which version of ``route`` this request goes to, by its canary share."""
        return choose_version(route, self.draws.random()) if route.canary is not None else route

    def mark_down(self, endpoint: str, now: float) -> None:
        self.down_until[endpoint] = now + DOWN_FOR_S

    def begin(self, deployment: str, endpoint: str) -> None:
        self.inflight[endpoint] = self.inflight.get(endpoint, 0) + 1
        self.inflight_by_deployment[deployment] = self.inflight_by_deployment.get(deployment, 0) + 1

    def end(self, deployment: str, endpoint: str) -> None:
        self.inflight[endpoint] -= 1
        self.inflight_by_deployment[deployment] -= 1
