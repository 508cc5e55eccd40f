"""``/clusters``: Kubernetes clusters besides the control plane's own — register (admins; the kubeconfig is sealed
and never shown again), list, remove (admins; refused while anything runs there)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.models import ClusterCreate, ClusterPublic
from studio.sealing import studio_key
from studio.services import clusters
from studio.values import Principal

router = APIRouter(prefix="/clusters", tags=["clusters"])
READ, WRITE = allowed("clusters:read"), allowed("clusters:write")


@router.get("", response_model=Page[ClusterPublic])
def list_clusters(
    request: Request, at: Annotated[Window, Depends(window)], _actor: Principal = READ
) -> Page[ClusterPublic]:
    """Registered clusters by name, and whether each answered the controller's last capacity read."""
    return page(clusters.list_clusters(db=request.app.state.db), at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ClusterPublic)
def add_cluster(request: Request, response: Response, data: ClusterCreate, actor: Principal = WRITE) -> ClusterPublic:
    """Register a cluster by a self-contained kubeconfig (inline credentials, https). Its nodes labelled
    ``cove.dev/pool=POOL`` become pool POOL within a capacity refresh."""
    app = request.app.state
    added = clusters.add_cluster(db=app.db, actor=actor, data=data, key=studio_key(app.settings))
    response.headers["Location"] = f"{request.url.path}/{added.name}"
    return added


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_cluster(request: Request, name: str, actor: Principal = WRITE) -> None:
    """Forget a cluster and its pools; 409 while deployments or notebooks use them."""
    clusters.remove_cluster(db=request.app.state.db, actor=actor, name=name)
