"""``client.clusters``: Kubernetes clusters besides the control plane's own (admins register and remove them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from studio.models import ClusterPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/clusters"


class Clusters:
    def __init__(self, client: Client) -> None:
        self.client = client

    def add(self, name: str, kubeconfig: str, **fields: Any) -> ClusterPublic:
        """Register a cluster by a self-contained kubeconfig's text (``kubectl config view --raw --minify
        --flatten``); ``context`` and ``namespace`` as ``ClusterCreate``."""
        body = {"name": name, "kubeconfig": kubeconfig, **fields}
        added: ClusterPublic = self.client.call(ClusterPublic, "POST", PATH, body=body)
        return added

    def list(self) -> Iterator[ClusterPublic]:
        return self.client.pages(ClusterPublic, PATH)

    def remove(self, name: str) -> None:
        """Forget a cluster and its pools; ``cove.Conflict`` while anything runs there."""
        self.client.request("DELETE", f"{PATH}/{name}")
