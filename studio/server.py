"""``cove server``: the gateway and the controller in one process.

The gateway runs on uvicorn's event loop; the controller runs on a thread of its own and reads the gateway's
in-flight counts for autoscaling. SIGINT/SIGTERM stop both and then every local replica (no orphans). A server
killed with SIGKILL leaves its replicas running; the next server adopts them.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import threading
from typing import Any

import uvicorn

from studio.api.app import build_api
from studio.backends.clusters import make_backend
from studio.bootstrap import open_studio
from studio.controller import Controller
from studio.errors import InvalidSpec, PortInUse
from studio.gateway.app import Gateway
from studio.gateway.connections import header_deadline
from studio.login import Login
from studio.settings import Settings

log = logging.getLogger(__name__)


def refuse_exposed(settings: Settings) -> None:
    """InvalidSpec, before anything listens, when a face would be reachable from other machines without asking who
    is there: login off (``COVE_LOGIN``) or the gateway without keys (``COVE_AUTH``) on a non-loopback address."""
    host = settings.host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if loopback:
        return
    for switch, on, what in (
        ("COVE_LOGIN", settings.login, "the studio, the playground and the hub would let anyone in as the first admin"),
        ("COVE_AUTH", settings.auth, "the gateway would serve anyone without an API key"),
    ):
        if not on:
            raise InvalidSpec(
                f"{switch} is off and COVE_HOST is {settings.host}: {what} from other machines",
                hint=f"turn {switch} on, or listen on 127.0.0.1 only",
            )


def bind(host: str, port: int, variable: str = "COVE_PORT") -> socket.socket:
    """A listening socket, or PortInUse naming the port and the setting (``variable``) that moves it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is in use by another program",
                hint=f"stop that program, or choose another port with {variable}",
            ) from exc
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Server:
    """The server's one ASGI app: ``/auth`` (where people log in) and ``/api`` (the Cove API) beside the gateway
    (everything else, its hot path untouched by their frameworks: one prefix test per request)."""

    def __init__(self, gateway: Gateway, login: Login, api: Any) -> None:
        self.gateway, self.login, self.api = gateway, login, api

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(("/auth/", "/api/")):
            await (self.login if scope["path"].startswith("/auth/") else self.api)(scope, receive, send)
        else:
            await self.gateway(scope, receive, send)


def serve(settings: Settings) -> None:
    refuse_exposed(settings)
    sock = bind(settings.host, settings.port)
    db = open_studio(settings)
    gateway = Gateway(settings=settings, db=db)
    controller = Controller(db=db, backend=make_backend(settings), settings=settings, load=gateway.load)
    api = build_api(settings=settings, db=db)
    # FastAPI builds the OpenAPI document on its first request, a second or more of CPU for 50-odd routes: build it
    # now, beside start-up, so the first client (cove.Client, /api/v1/docs) is not the one that waits.
    threading.Thread(target=api.openapi, name="openapi", daemon=True).start()
    config = uvicorn.Config(
        Server(gateway, Login(settings=settings, db=db), api),
        loop="uvloop",
        http=header_deadline(settings.header_timeout_s),  # httptools, with a deadline on request headers
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        limit_concurrency=settings.max_connections,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers in place that
    # re-raise lands here instead of killing the process, so the replicas below are stopped too.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: log.info("stopping (signal %d)", signum))
    controller.start()
    log.info(
        "gateway on %s, controller every %.1f s, state in %s",
        settings.gateway_url,
        settings.controller_interval_s,
        settings.home,
    )
    try:
        server.run(sockets=[sock])
    finally:
        log.info("stopping the controller and local replicas")
        controller.stop(stop_workloads=True)
        db.dispose()
        sock.close()
