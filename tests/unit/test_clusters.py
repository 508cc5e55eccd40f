"""Which backend runs each cluster: the default one, and one per registered cluster, rebuilt when its kubeconfig
changes and closed (its workloads left running) when it is removed."""

from __future__ import annotations

import pytest

from studio.backends.base import Connection
from studio.backends.clusters import Clusters
from studio.errors import NotFound
from tests.fakes.backends import InstantBackend


class Closable(InstantBackend):
    def __init__(self, made_from: Connection | None = None) -> None:
        super().__init__()
        self.made_from = made_from
        self.closed: list[bool] = []

    def close(self, *, stop_workloads: bool) -> None:
        self.closed.append(stop_workloads)


def test_each_cluster_gets_one_backend_rebuilt_when_its_registration_changes() -> None:
    default = Closable()
    made: list[Closable] = []

    def connect(connection: Connection) -> Closable:
        made.append(Closable(connection))
        return made[-1]

    clusters = Clusters(lambda: default, connect=connect)
    east = Connection("east", kubeconfig="a", namespace="cove")
    clusters.update([east])
    assert clusters.names() == ["default", "east"]
    assert clusters.get("default") is default
    first = clusters.get("east")
    assert clusters.get("east") is first  # built once
    assert len(made) == 1

    clusters.update([Connection("east", kubeconfig="a", namespace="team")])  # a changed registration
    assert made[0].closed == [False]  # its workloads run on
    assert clusters.get("east") is not first
    clusters.update([])
    assert made[1].closed == [False]
    with pytest.raises(NotFound, match="no cluster named 'east' is registered"):
        clusters.get("east")

    clusters.close(stop_workloads=True)
    assert default.closed == [True]  # local replicas stop with the control plane; clusters' never do


def test_a_connection_keeps_its_credentials_out_of_its_repr_and_changes_with_them() -> None:
    east = Connection("east", kubeconfig="secret-token: abc", namespace="cove")
    assert "secret-token" not in repr(east)
    assert east.fingerprint != Connection("east", kubeconfig="secret-token: abd").fingerprint
