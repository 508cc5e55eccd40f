"""The studio's side of the notebook hub: the token it calls the hub's API with, and a client of that API (list,
start and stop servers). The hub (``hub/``) is a separate process that imports Cove; Cove never imports it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from studio.errors import BackendUnavailable, CoveError, NotFound, QuotaExceeded
from studio.sealing import kept_secret
from studio.settings import Settings


def service_token(settings: Settings) -> str:
    """The studio's hub token: COVE_HUB_API_TOKEN (a Secret on Kubernetes, shared by the hub and the studio), else
    kept in COVE_HOME/hub/api_token (readable by its owner only) and made on first use."""
    return settings.hub_api_token or kept_secret(settings.hub_dir / "api_token")


@dataclass(frozen=True)
class Server:
    user: str
    name: str  # "" for the user's default server
    ready: bool
    pending: str | None  # "spawn", "stop" … while changing
    started: str | None
    last_activity: str | None
    url: str


class HubClient:
    def __init__(self, settings: Settings, timeout: float = 30) -> None:
        self.base = f"{settings.hub_url}/hub/api"
        self.token = service_token(settings)
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("message") or exc.reason
            except ValueError:
                message = exc.reason
            kind = {404: NotFound, 409: QuotaExceeded}.get(exc.code, CoveError)
            raise kind(f"the hub refused: {message}") from exc
        except OSError as exc:
            raise BackendUnavailable(
                f"the notebook hub at {self.base.removesuffix('/hub/api')} does not answer",
                hint="start Cove with `cove up` (or the hub alone with `cove hub`)",
            ) from exc
        return json.loads(raw) if raw else None

    def servers(self) -> list[Server]:
        found = []
        for user in self._call("GET", "/users?state=") or []:
            for name, server in (user.get("servers") or {}).items():
                found.append(
                    Server(
                        user=user["name"],
                        name=name,
                        ready=bool(server.get("ready")),
                        pending=server.get("pending"),
                        started=server.get("started"),
                        last_activity=server.get("last_activity"),
                        url=server.get("url", ""),
                    )
                )
        return found

    def start(self, user: str, profile: str) -> None:
        """Start ``user``'s server with ``profile`` (the user is created if new); refusals keep the hub's words."""
        try:
            self._call("POST", f"/users/{user}")
        except QuotaExceeded as exc:  # 409: the user exists already
            if "exists" not in exc.message:
                raise
        self._call("POST", f"/users/{user}/server", {"profile": profile})

    def stop(self, user: str) -> None:
        self._call("DELETE", f"/users/{user}/server")
