"""Which backend runs each cluster: the default one, and one per registered cluster, rebuilt when its kubeconfig
changes and closed (its workloads left running) when it is removed; and which kubeconfigs are refused when a cluster
is registered (anything that would run a command or read a file in the controller, servers not on https)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from studio.backends.base import Connection
from studio.backends.clusters import Clusters
from studio.errors import InvalidSpec, NotFound
from studio.services.clusters import read_kubeconfig
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


# ------------------------------------------------------------------------------------------------ kubeconfigs

TOKEN_USER = {"token": "secret-token"}
INLINE_CERT_USER = {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}
HTTPS = {"server": "https://east.example.com:6443", "certificate-authority-data": "Q0E="}


def kubeconfig(
    *, user: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None, **others: dict[str, Any]
) -> str:
    """A kubeconfig whose current context ``east`` joins the cluster ``east`` and the user ``ops``; ``others``
    are further entries no context uses, ``user_NAME`` / ``cluster_NAME``."""
    users = [{"name": "ops", "user": user if user is not None else TOKEN_USER}]
    clusters = [{"name": "east", "cluster": cluster if cluster is not None else HTTPS}]
    for key, body in others.items():
        kind, _, name = key.partition("_")
        (users if kind == "user" else clusters).append({"name": name, kind: body})
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "east",
            "contexts": [{"name": "east", "context": {"cluster": "east", "user": "ops"}}],
            "clusters": clusters,
            "users": users,
        }
    )


@pytest.mark.parametrize("user", [TOKEN_USER, INLINE_CERT_USER, {"username": "ops", "password": "pw"}])
def test_a_kubeconfig_with_inline_credentials_and_an_https_server_is_read(user: dict[str, Any]) -> None:
    assert read_kubeconfig(kubeconfig(user=user)) == ("east", "https://east.example.com:6443")


EXEC = {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws", "args": ["eks", "get-token"]}
UNSAFE = {  # (what the kubeconfig holds) -> (the message, the hint)
    "exec": (
        {"user": {"exec": EXEC}},
        "the kubeconfig's user 'ops' has exec, which runs a command in Cove's controller",
        "a ServiceAccount token",
    ),
    "auth-provider": (
        {"user": {"auth-provider": {"name": "gcp", "config": {"cmd-path": "/usr/bin/gcloud"}}}},
        "the kubeconfig's user 'ops' has auth-provider, which fetches credentials by the plugin's own means",
        "a ServiceAccount token",
    ),
    "tokenFile": (
        {"user": {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}},
        "the kubeconfig's user 'ops' has tokenFile, a file path Cove's controller would read",
        "put the token itself in `token`",
    ),
    "client-certificate": (
        {"user": {"client-certificate": "/etc/cove/tls.crt", "client-key-data": "S0VZ"}},
        "the kubeconfig's user 'ops' has client-certificate, a file path Cove's controller would read",
        "kubectl config view --raw --minify --flatten",
    ),
    "client-key": (
        {"user": {"client-certificate-data": "Q0VSVA==", "client-key": "/etc/cove/tls.key"}},
        "the kubeconfig's user 'ops' has client-key, a file path Cove's controller would read",
        "kubectl config view --raw --minify --flatten",
    ),
    "certificate-authority": (
        {"cluster": {"server": "https://east.example.com:6443", "certificate-authority": "/etc/cove/ca.crt"}},
        "the kubeconfig's cluster 'east' has certificate-authority, a file path Cove's controller would read",
        "kubectl config view --raw --minify --flatten",
    ),
    "any -file key": (
        {"cluster": {"server": "https://east.example.com:6443", "proxy-ca-file": "/etc/cove/proxy.crt"}},
        "the kubeconfig's cluster 'east' has proxy-ca-file, a file path Cove's controller would read",
        "kubectl config view --raw --minify --flatten",
    ),
    "insecure-skip-tls-verify": (
        {"cluster": {"server": "https://east.example.com:6443", "insecure-skip-tls-verify": True}},
        "the kubeconfig's cluster 'east' has insecure-skip-tls-verify, so Cove would send its credentials to "
        "whoever answers at its address",
        "certificate-authority-data",
    ),
    "insecure-skip-tls-verify in a cluster no context uses": (
        {"cluster_lab": {"server": "https://10.0.0.9", "insecure-skip-tls-verify": True}},
        "the kubeconfig's cluster 'lab' has insecure-skip-tls-verify",
        "certificate-authority-data",
    ),
    "exec in a user no context uses": (
        {"user_ci": {"exec": EXEC}},
        "the kubeconfig's user 'ci' has exec, which runs a command in Cove's controller",
        "a ServiceAccount token",
    ),
    "a file in a cluster no context uses": (
        {"cluster_lab": {"server": "https://lab.example.com", "certificate-authority": "/home/ops/.minikube/ca.crt"}},
        "the kubeconfig's cluster 'lab' has certificate-authority, a file path Cove's controller would read",
        "kubectl config view --raw --minify --flatten",
    ),
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_a_kubeconfig_that_would_run_a_command_or_read_a_file_is_refused_by_name(case: str) -> None:
    """The Kubernetes client would run the command, call the plugin or read the file as the controller's user, in
    its pod: refused for every user and cluster of the file, not only the chosen context's, naming the entry."""
    entries, message, hint = UNSAFE[case]
    with pytest.raises(InvalidSpec) as refused:
        read_kubeconfig(kubeconfig(**entries))
    assert refused.value.message.startswith(message), refused.value.message
    assert hint in refused.value.hint


LOOPBACK_HTTP = ["http://127.0.0.1:8001", "http://localhost:8001", "http://LOCALHOST", "http://[::1]:8001"]


@pytest.mark.parametrize("server", ["https://east.example.com:6443", "https://10.0.0.1", *LOOPBACK_HTTP])
def test_https_servers_and_plain_http_on_the_loopback_are_taken(server: str) -> None:
    """Plain http on the loopback: a local API emulator, or `kubectl proxy` (which adds the credentials itself)."""
    assert read_kubeconfig(kubeconfig(cluster={"server": server})) == ("east", server)


@pytest.mark.parametrize(
    "server",
    [
        "http://east.example.com:6443",
        "http://10.0.0.1:6443",
        "http://0.0.0.0:8001",
        "http://127.0.0.1.nip.io",
        "http://localhost.example.com",
        "east.example.com:6443",
        "ftp://east.example.com",
        "https://",
        "http://[::1",
    ],
)
def test_a_server_that_is_not_https_is_refused_by_name(server: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        read_kubeconfig(kubeconfig(cluster={"server": server}))
    assert refused.value.message == f"the kubeconfig's cluster 'east' has the server URL {server!r}, which is not https"
    assert "give its https URL" in refused.value.hint
    assert "loopback" in refused.value.hint


def test_an_http_server_in_a_cluster_no_context_uses_is_refused_too() -> None:
    with pytest.raises(InvalidSpec) as refused:
        read_kubeconfig(kubeconfig(cluster_lab={"server": "http://lab.example.com"}))
    assert refused.value.message.startswith(
        "the kubeconfig's cluster 'lab' has the server URL 'http://lab.example.com'"
    )


def test_a_cluster_on_the_loopback_may_skip_tls_verification() -> None:
    """A local emulator or an SSH tunnel to the API: nothing leaves the host."""
    cluster = {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}
    assert read_kubeconfig(kubeconfig(cluster=cluster)) == ("east", "https://127.0.0.1:6443")
