"""``/notebooks``: the hub's running notebook servers and what each holds of its pool (the hub starts and stops
them; the API reads them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.models import NotebookPublic
from studio.services import notebooks
from studio.values import Principal

router = APIRouter(prefix="/notebooks", tags=["notebooks"])
READ = allowed("notebooks:read")


@router.get("", response_model=Page[NotebookPublic])
def list_notebooks(
    request: Request,
    at: Annotated[Window, Depends(window)],
    actor: Principal = READ,
    user: str | None = None,
    pool: str | None = None,
) -> Page[NotebookPublic]:
    """Running servers by name (an admin sees everyone's, a member their own), filtered by user and pool."""
    found = [
        n
        for n in notebooks.list_notebooks(db=request.app.state.db, actor=actor)
        if (user is None or n.user == user) and (pool is None or n.pool == pool)
    ]
    return page(found, at)
