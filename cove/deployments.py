"""``client.deployments``: deploy a model, follow it to Ready, scale, autoscale, delete, read logs and events."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from studio.errors import CoveError, RuntimeUnavailable
from studio.models import DeploymentPublic, EventPublic
from studio.values import Autoscale, Status

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/deployments"
Events = list[EventPublic]  # (the names `list` would be the method below, inside the class)
Lines = list[str]


class Deployments:
    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, name: str, model: str, **fields: Any) -> DeploymentPublic:
        """Deploy ``model`` (newest version unless ``model_version``) as ``name``; other fields as
        ``DeploymentCreate``: image, image_version, pool, cluster, group, replicas, resources, autoscale,
        runtime_args. Answers at once; ``wait_ready`` follows it."""
        body = {"name": name, "model": model, **fields}
        dep: DeploymentPublic = self.client.call(DeploymentPublic, "POST", PATH, body=body)
        return dep

    def get(self, name: str) -> DeploymentPublic:
        dep: DeploymentPublic = self.client.call(DeploymentPublic, "GET", f"{PATH}/{name}")
        return dep

    def list(self, **filters: Any) -> Iterator[DeploymentPublic]:
        """Every deployment the caller may see, filtered by status, model, pool, owner or group."""
        return self.client.pages(DeploymentPublic, PATH, **filters)

    def _update(self, name: str, body: dict[str, Any], if_match: int | None) -> DeploymentPublic:
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        dep: DeploymentPublic = self.client.call(
            DeploymentPublic, "PATCH", f"{PATH}/{name}", body=body, headers=headers
        )
        return dep

    def scale(self, name: str, replicas: int, *, if_match: int | None = None) -> DeploymentPublic:
        """Set the replica count; with ``if_match`` (a generation read before), only if nobody changed it since
        (``cove.Stale`` otherwise, carrying the current generation)."""
        return self._update(name, {"replicas": replicas}, if_match)

    def autoscale(
        self, name: str, autoscale: Autoscale | dict[str, Any] | None, *, if_match: int | None = None
    ) -> DeploymentPublic:
        """Autoscale between bounds (``Autoscale`` or its fields); None turns autoscaling off."""
        return self._update(name, {"autoscale": autoscale}, if_match)

    def caps(self, name: str, *, if_match: int | None = None, **caps: int | None) -> DeploymentPublic:
        """Set the most a request may ask: ``max_tokens_cap``, ``n_cap`` (None: the studio's default); a cap not
        given keeps its value. Larger requests are answered 400."""
        return self._update(name, caps, if_match)

    def delete(self, name: str) -> DeploymentPublic:
        dep: DeploymentPublic = self.client.call(DeploymentPublic, "DELETE", f"{PATH}/{name}")
        return dep

    def logs(self, name: str, *, tail: int = 100) -> Lines:
        lines: Lines = self.client.request("GET", f"{PATH}/{name}/logs", params={"tail": tail}).json()["lines"]
        return lines

    def events(self, name: str, *, limit: int = 50) -> Events:
        found: Events = self.client.call(Events, "GET", f"{PATH}/{name}/events", params={"limit": limit})
        return found

    def wait_ready(
        self,
        name: str,
        *,
        timeout: float = 600,
        poll: float = 1.0,
        on_change: Callable[[DeploymentPublic], None] | None = None,
    ) -> DeploymentPublic:
        """Follow ``name`` until it is Ready (every replica) and return it; its message is raised if it fails,
        and a CoveError after ``timeout`` seconds. ``on_change`` sees each new status."""
        deadline, last = time.monotonic() + timeout, ""
        while True:
            dep = self.get(name)
            seen = f"{dep.status} {dep.ready_replicas}/{dep.replicas} {dep.message}"
            if seen != last and on_change is not None:
                on_change(dep)
            last = seen
            if dep.status is Status.READY and dep.ready_replicas >= dep.replicas:
                return dep
            if dep.status is Status.FAILED:
                raise RuntimeUnavailable(
                    f"deployment {name!r} failed: {dep.message or 'no message'}",
                    hint=f"see its logs: client.deployments.logs({name!r})",
                )
            if time.monotonic() + poll > deadline:
                raise CoveError(
                    f"deployment {name!r} is still {dep.status} ({dep.ready_replicas}/{dep.replicas} ready) after "
                    f"{timeout:.0f} s",
                    hint="wait longer, or read its events and logs",
                )
            time.sleep(poll)
