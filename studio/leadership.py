"""Who leads: of several servers on one database (or one cluster), exactly one runs the controller.

An ``Elector`` keeps trying one lock on a thread of its own, every ``retry_s``: a follower tries to take it, the
leader checks that it still holds it and steps down at once when it does not. The locks:

- ``AdvisoryLock``: a PostgreSQL session-level advisory lock held on a connection of its own. The database frees it
  when that connection ends (the leader died, or the network between them did: server-side TCP keepalives are set
  on the connection so a vanished leader is noticed in about 10 s), and a leader whose connection fails stops
  leading before it reconnects.
- ``FileLock``: ``flock`` on a file beside the SQLite database; the kernel frees it when the holder dies.
- ``LeaseLock``: a ``coordination.k8s.io/v1`` Lease, renewed every ``retry_s``; a Lease whose holder has not renewed
  it for ``duration_s`` (as this process observed, so clocks need not agree) is taken over.

Each says who holds it (``holder``), for ``/healthz`` and the log. Locks report failure as False, never raise: a
lock that cannot be checked is a lock not held.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from urllib3.exceptions import HTTPError  # what the Kubernetes client raises when the API does not answer

from studio.settings import Settings

log = logging.getLogger(__name__)

CONTROLLER_LOCK = 0x636F7665  # "cove": the advisory lock key of the controller (per database; db.MIGRATION_LOCK: +1)


def identity() -> str:
    """This process, as other servers see it: host, pid and a random tail (pids repeat across restarts)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Lock(Protocol):
    def acquire(self) -> bool:
        """Try once to take the lock; True when this process holds it now."""
        ...

    def renew(self) -> bool:
        """Whether this process still holds the lock it took (renewing it where it expires)."""
        ...

    def holder(self) -> str:
        """Who holds it, as far as can be told; '' when nobody does or it cannot be read."""
        ...

    def release(self) -> None: ...


class Elector:
    """Keeps ``lock`` on its own thread; ``leading`` says whether this process leads now. ``on_change(leading)``
    is called (on the elector's thread) each time that changes."""

    def __init__(self, lock: Lock, *, me: str, retry_s: float, on_change: Callable[[bool], None] | None = None) -> None:
        self.lock, self.me, self.retry_s, self.on_change = lock, me, retry_s, on_change
        self._leading = threading.Event()
        self._leader = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    @property
    def leader(self) -> str:
        """Who leads, as last seen ('' when unknown)."""
        return self.me if self.leading else self._leader

    def report(self) -> dict[str, object]:
        """What ``/healthz`` says of the controller."""
        return {"role": "leader" if self.leading else "follower", "leader": self.leader, "me": self.me}

    def step(self) -> None:
        """One try: take the lock, or check it is still held."""
        if self.leading:
            if not self.lock.renew():
                self._leading.clear()
                log.warning("no longer leading: the lock was lost; the controller stops reconciling")
                self.lock.release()
                self._changed(False)
            return
        if self.lock.acquire():
            self._leading.set()
            log.info("leading: this server (%s) runs the controller", self.me)
            self._changed(True)
            return
        seen = self.lock.holder()
        if seen != self._leader:
            log.info("following: %s runs the controller", seen or "another server")
            self._leader = seen

    def _changed(self, leading: bool) -> None:
        if self.on_change is not None:
            self.on_change(leading)

    def wait_until_leading(self, timeout: float) -> bool:
        return self._leading.wait(timeout)

    def start(self) -> None:
        self.step()
        self._thread = threading.Thread(target=self._loop, name="cove-elector", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.retry_s):
            try:
                self.step()
            except Exception:  # the elector must outlive a bad try; a leader that cannot tell steps down
                log.exception("leader election failed")
                if self._leading.is_set():
                    self._leading.clear()
                    self.lock.release()
                    self._changed(False)

    def stop(self) -> None:
        """Stop trying, and give the lock up so a follower takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._leading.is_set():
            self._leading.clear()
            self.lock.release()


class Always:
    """No election (``COVE_LEADER_ELECTION=off``, or an in-memory database): this process leads."""

    def acquire(self) -> bool:
        return True

    def renew(self) -> bool:
        return True

    def holder(self) -> str:
        return ""

    def release(self) -> None:
        pass


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a dedicated connection (outside the pool, so nothing else can
    use or recycle it)."""

    def __init__(self, url: str, *, me: str, key: int = CONTROLLER_LOCK, timeout_s: float = 5) -> None:
        self.key = key
        seconds = max(1, int(timeout_s))
        self.engine = sa.create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "application_name": f"cove {me}"[:63],  # how followers name the leader (pg_stat_activity)
                "connect_timeout": seconds,
                # the client notices a dead server, and gives up on an unanswered write, within a few seconds
                "keepalives": 1, "keepalives_idle": seconds, "keepalives_interval": 1, "keepalives_count": 3,
                "tcp_user_timeout": seconds * 1000,
            },
        )  # fmt: skip
        self._conn: sa.Connection | None = None

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            conn = self.engine.connect()
            # the server notices a vanished client as quickly, and frees its lock
            for name, value in (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 1),
                                ("tcp_keepalives_count", 3), ("statement_timeout", 5000)):  # fmt: skip
                conn.exec_driver_sql(f"SET {name} = {value}")
            conn.commit()
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None

    def acquire(self) -> bool:
        try:
            conn = self._connection()
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            conn.commit()
            return got
        except sa.exc.SQLAlchemyError as exc:
            log.warning("cannot reach the database to take the controller's lock: %s", exc)
            self._drop()
            return False

    def renew(self) -> bool:
        """Held when its connection answers and the lock is still this session's."""
        if self._conn is None:
            return False
        try:
            held = self._conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND classid = 0 AND objid = :k AND objsubid = 1 AND granted"
                ),
                {"k": self.key},
            ).scalar()
            self._conn.commit()
            return bool(held)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("the controller's lock connection failed: %s", exc)
            self._drop()
            return False

    def holder(self) -> str:
        if self._conn is None:
            return ""
        try:
            name = self._conn.execute(
                sa.text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = :k AND l.objsubid = 1 "
                    "AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"k": self.key},
            ).scalar()
            self._conn.commit()
        except sa.exc.SQLAlchemyError:
            self._drop()
            return ""
        return str(name or "").removeprefix("cove ")

    def release(self) -> None:
        # closing the session frees every lock it holds, and a broken session has none to free
        self._drop()
        self.engine.dispose()


class FileLock:
    """``flock`` on ``path``; the holder writes its name into the file."""

    def __init__(self, path: Path, *, me: str) -> None:
        self.path, self.me = path, me
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("cannot open the controller's lock file %s: %s", self.path, exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        with contextlib.suppress(OSError):  # the name is for people; the lock holds without it
            os.ftruncate(fd, 0)
            os.pwrite(fd, self.me.encode(), 0)
        self._fd = fd
        return True

    def renew(self) -> bool:
        """Held while the file it locked is still the file at ``path`` (one removed and made again is not)."""
        if self._fd is None:
            return False
        try:
            return os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def holder(self) -> str:
        try:
            return self.path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing frees the flock
            self._fd = None


def _micro_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLock:
    """A ``coordination.k8s.io/v1`` Lease named ``name`` in ``namespace``, through the official client's
    ``CoordinationV1Api`` (``api``). Writes carry the resourceVersion read, so two takers cannot both win."""

    def __init__(
        self,
        api: Any,
        *,
        namespace: str,
        name: str,
        me: str,
        duration_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api, self.namespace, self.name, self.me = api, namespace, name, me
        self.duration_s, self.clock = duration_s, clock
        self._seen: tuple[str, str] | None = None  # (holder, renewTime) last read
        self._seen_at = 0.0  # when it last changed, by this process's clock
        self._renewed_at = -float("inf")

    def _read(self) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _spec(self, *, transitions: int) -> dict[str, Any]:
        now = _micro_time(datetime.now(UTC))
        return {
            "holderIdentity": self.me,
            "leaseDurationSeconds": max(1, round(self.duration_s)),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def acquire(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._read()
            if lease is None:
                body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(transitions=0)}
                self.api.create_namespaced_lease(self.namespace, body)
                self._renewed_at = self.clock()
                return True
            spec = lease.spec
            holder = spec.holder_identity or ""
            seen = (holder, str(spec.renew_time))
            if seen != self._seen:
                self._seen, self._seen_at = seen, self.clock()
            if holder and holder != self.me and self.clock() - self._seen_at < self.duration_s:
                return False
            body = {
                "metadata": {"resourceVersion": lease.metadata.resource_version},
                "spec": self._spec(transitions=(spec.lease_transitions or 0) + (holder != self.me)),
            }
            self.api.patch_namespaced_lease(self.name, self.namespace, body)
            self._renewed_at = self.clock()
            return True
        except (ApiException, OSError, HTTPError) as exc:  # a conflict (another took it first), or no answer
            log.debug("taking the Lease %s: %s", self.name, exc)
            return False

    def renew(self) -> bool:
        """Renewed, or still within its duration since the last renewal when the API does not answer (the lease is
        not given up for one failed call; a holder seen to be another is)."""
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._read()
            if lease is None or (lease.spec.holder_identity or "") != self.me:
                return False
            body = {
                "metadata": {"resourceVersion": lease.metadata.resource_version},
                "spec": {"renewTime": _micro_time(datetime.now(UTC))},
            }
            self.api.patch_namespaced_lease(self.name, self.namespace, body)
            self._renewed_at = self.clock()
            return True
        except (ApiException, OSError, HTTPError) as exc:
            log.warning("renewing the Lease %s: %s", self.name, exc)
            # stop before a follower may take over: two thirds of the duration, as client-go's renew deadline
            return self.clock() - self._renewed_at < self.duration_s * 2 / 3

    def holder(self) -> str:
        return self._seen[0] if self._seen else ""

    def release(self) -> None:
        """Say the Lease is free (no holder), so a follower takes it on its next try."""
        from kubernetes.client.exceptions import ApiException

        with contextlib.suppress(ApiException, OSError, HTTPError):
            lease = self._read()
            if lease is not None and (lease.spec.holder_identity or "") == self.me:
                body = {"metadata": {"resourceVersion": lease.metadata.resource_version},
                        "spec": {"holderIdentity": None, "leaseDurationSeconds": 1}}  # fmt: skip
                self.api.patch_namespaced_lease(self.name, self.namespace, body)


def lock_for(settings: Settings, *, me: str, environ: Mapping[str, str] = os.environ) -> Lock:
    """The lock ``COVE_LEADER_ELECTION`` names; ``auto``: a Lease when this server runs in a Kubernetes cluster it
    drives (``COVE_BACKEND=kubernetes``, a pod's ``KUBERNETES_SERVICE_HOST``), else the database's own lock."""
    kind = settings.leader_election
    url = sa.engine.make_url(settings.db_url)
    if kind == "auto":
        if settings.backend == "kubernetes" and environ.get("KUBERNETES_SERVICE_HOST"):
            kind = "kubernetes"
        else:
            kind = "postgres" if url.get_backend_name() == "postgresql" else "file"
    if kind == "postgres":
        return AdvisoryLock(settings.db_url, me=me)
    if kind == "kubernetes":
        from kubernetes import client

        from studio.backends.kubernetes.client import connect

        api = client.CoordinationV1Api(connect(kubeconfig=settings.kubeconfig, context=settings.kube_context))
        return LeaseLock(
            api, namespace=settings.kube_namespace, name=f"{settings.release}-controller", me=me,
            duration_s=settings.leader_lease_s,
        )  # fmt: skip
    if kind == "file" and url.database and url.database != ":memory:":
        return FileLock(Path(f"{url.database}.leader"), me=me)
    return Always()  # off, or a database only this process can open
