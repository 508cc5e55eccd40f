"""Which backend runs each cluster: the control plane's own (``default``, from ``COVE_BACKEND``) and one
KubernetesBackend per registered cluster, each built on first use (so one client serves every call) and a
registered cluster's rebuilt when its registration changes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from studio.backends.base import Backend, Connection
from studio.errors import BackendUnavailable, NotFound
from studio.settings import Settings
from studio.values import DEFAULT_CLUSTER

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> Backend:
    """The default cluster's backend, as the settings name it; the Kubernetes client is imported only when used."""
    if settings.backend == "kubernetes":
        from studio.backends.kubernetes.backend import KubernetesBackend
        from studio.backends.kubernetes.client import KubeClient, connect

        api = connect(kubeconfig=settings.kubeconfig, context=settings.kube_context)
        return KubernetesBackend(settings, KubeClient(api, settings.kube_namespace))
    from studio.backends.local import LocalBackend

    return LocalBackend(settings)


def connect_cluster(settings: Settings) -> Callable[[Connection], Backend]:
    """How a registered cluster's backend is made."""

    def connect(connection: Connection) -> Backend:
        from studio.backends.kubernetes.backend import connect_cluster

        return connect_cluster(settings, connection)

    return connect


class Clusters:
    def __init__(self, default: Callable[[], Backend], *, connect: Callable[[Connection], Backend]) -> None:
        self._make_default = default
        self._default: Backend | None = None
        self.connect = connect
        self._connections: dict[str, Connection] = {}
        self._backends: dict[str, tuple[str, Backend]] = {}  # name → (its connection's fingerprint, backend)

    def update(self, connections: Iterable[Connection]) -> None:
        """The registered clusters now; backends of removed or changed ones are closed (their workloads run on)."""
        self._connections = {c.name: c for c in connections}
        for name, (fingerprint, backend) in list(self._backends.items()):
            now = self._connections.get(name)
            if now is None or now.fingerprint != fingerprint:
                log.info("cluster %s %s: reconnecting", name, "removed" if now is None else "changed")
                del self._backends[name]
                backend.close(stop_workloads=False)

    @property
    def default(self) -> Backend:
        """The control plane's own cluster's backend."""
        if self._default is None:
            self._default = self._make_default()
        return self._default

    def names(self) -> list[str]:
        return [DEFAULT_CLUSTER, *sorted(self._connections)]

    def get(self, name: str) -> Backend:
        """The cluster's backend; NotFound for a cluster nobody registered, BackendUnavailable when its kubeconfig
        cannot be used."""
        if name == DEFAULT_CLUSTER:
            return self.default
        connection = self._connections.get(name)
        if connection is None:
            raise NotFound(f"no cluster named {name!r} is registered", hint="register it with `cove cluster add`")
        if connection.problem:
            raise BackendUnavailable(connection.problem)
        built = self._backends.get(name)
        if built is None:
            built = self._backends[name] = (connection.fingerprint, self.connect(connection))
        return built[1]

    def close(self, *, stop_workloads: bool) -> None:
        """Local workloads stop with the control plane when asked; cluster workloads always run on."""
        if self._default is not None:
            self._default.close(stop_workloads=stop_workloads)
            self._default = None  # made again when next used (a server that leads again adopts what runs)
        for _fingerprint, backend in self._backends.values():
            backend.close(stop_workloads=False)
        self._backends.clear()
