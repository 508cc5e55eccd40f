"""``cove server``: the gateway and the controller in one process.

The gateway runs on uvicorn's event loop; the controller runs on a thread of its own and reads the gateway's
in-flight counts for autoscaling. Of several servers on one database (or cluster) only the one that holds the
controller's lock reconciles (``studio.leadership``); the others serve the API and the gateway, and one takes over
within ``COVE_LEADER_RETRY_S`` of the leader's lock being freed. ``/healthz`` says which this one is.
SIGINT/SIGTERM stop both and then every local replica (no orphans). A server killed with SIGKILL leaves its replicas
running; the next server adopts them.

A database that does not answer at start-up does not stop the server: it listens at once (``/livez`` 200,
``/readyz`` 503 ``starting`` with the attempt and the last error), retries migrating and seeding the database with
the gateway's backoff (``Gateway.prepare``), and only then joins the election, starts the controller and serves;
until then every request gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import threading
from typing import Any

import orjson
import uvicorn

from studio.api.app import build_api
from studio.backends.clusters import Clusters, connect_cluster, make_backend
from studio.bootstrap import check_studio, prepare_studio
from studio.controller import Controller
from studio.db import Database, make_engine
from studio.errors import DatabaseError, InvalidSpec, PortInUse, to_wire
from studio.gateway.app import Gateway
from studio.gateway.connections import header_deadline
from studio.gateway.proxy import respond
from studio.leadership import Elector, identity, lock_for
from studio.login import Login
from studio.models import PoolSpec
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


# What /api/ and /auth/ answer while the server has not reached its database yet.
STARTING = orjson.dumps(
    to_wire(
        DatabaseError(
            "Cove is starting and has not reached its database yet",
            hint="retry shortly; GET /readyz says which attempt it is on and why the last one failed",
        )
    )
)


class Server:
    """The server's one ASGI app: ``/auth`` (where people log in) and ``/api`` (the Cove API) beside the gateway
    (everything else, its hot path untouched by their frameworks: one prefix test per request). Until the gateway
    has reached the database, ``/auth`` and ``/api`` answer 503 with ``Retry-After`` (the gateway does the same for
    its own requests)."""

    def __init__(self, gateway: Gateway, login: Login, api: Any) -> None:
        self.gateway, self.login, self.api = gateway, login, api

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(("/auth/", "/api/")):
            if not self.gateway.connected:
                await respond(send, 503, STARTING, [(b"retry-after", b"5")])
                return
            await (self.login if scope["path"].startswith("/auth/") else self.api)(scope, receive, send)
        else:
            await self.gateway(scope, receive, send)


class Startup:
    """What the server does once its database answers: migrate and seed it, then join the election and start the
    controller. The gateway calls it on a worker thread at each start-up attempt until one succeeds (``prepare``);
    the election and the controller start once, and not at all once ``stop`` was called."""

    def __init__(
        self, *, db: Database, settings: Settings, specs: list[PoolSpec], elector: Elector, controller: Controller
    ) -> None:
        self.db, self.settings, self.specs, self.elector, self.controller = db, settings, specs, elector, controller
        self._lock = threading.Lock()
        self.started = self.stopped = False

    def __call__(self) -> None:
        prepare_studio(db=self.db, settings=self.settings, specs=self.specs)
        with self._lock:
            if self.started or self.stopped:
                return
            self.elector.start()
            self.controller.start()
            self.started = True
        log.info(
            "the database answers: controller every %.1f s while leading (%s)",
            self.settings.controller_interval_s,
            "this server leads" if self.elector.leading else f"{self.elector.leader or 'another server'} leads",
        )

    def stop(self) -> None:
        """Stop the controller (and every local replica), then leave the election."""
        with self._lock:
            self.stopped = True
        self.controller.stop(stop_workloads=True)
        self.elector.stop()  # after the replicas: the next leader adopts nothing half-stopped


def serve(settings: Settings) -> None:
    refuse_exposed(settings)
    specs = check_studio(settings)  # a bad pool is refused now; a database that does not answer is waited for
    sock = bind(settings.host, settings.port)
    db = Database(make_engine(settings.db_url, connect_timeout_s=settings.db_connect_timeout_s))
    me = identity()
    elector = Elector(lock_for(settings, me=me), me=me, retry_s=settings.leader_retry_s)
    clusters = Clusters(lambda: make_backend(settings), connect=connect_cluster(settings))
    gateway = Gateway(settings=settings, db=db)
    controller = Controller(db=db, clusters=clusters, settings=settings, load=gateway.load, leadership=elector)
    startup = Startup(db=db, settings=settings, specs=specs, elector=elector, controller=controller)
    gateway.prepare = startup
    gateway.controller_report = lambda: elector.report() | {"logs_not_kept": controller.jobs.logs_not_kept}
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
    log.info(
        "gateway on %s, state in %s; the controller starts once the database answers",
        settings.gateway_url,
        settings.home,
    )
    try:
        server.run(sockets=[sock])
    finally:
        log.info("stopping the controller and local replicas")
        startup.stop()
        db.dispose()
        sock.close()
