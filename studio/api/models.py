"""``/models``: the catalog — register a model (or a new version of one) from the Hub or a folder the server can
read, list with filters, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.errors import NotFound
from studio.models import ModelCreate, ModelPublic, ModelVersionPublic
from studio.services import models
from studio.values import Principal

router = APIRouter(prefix="/models", tags=["models"])
READ, WRITE = allowed("models:read"), allowed("models:write")


@router.get("", response_model=Page[ModelPublic])
def list_models(
    request: Request,
    at: Annotated[Window, Depends(window)],
    _actor: Principal = READ,
    owner: str | None = None,
    group: str | None = None,
    q: Annotated[str | None, Query(description="Part of the name or description.")] = None,
) -> Page[ModelPublic]:
    """The catalog (everyone reads it), by name."""
    found = [
        m
        for m in models.list_models(db=request.app.state.db)
        if (owner is None or m.owner == owner)
        and (group is None or m.group == group)
        and (q is None or q.lower() in f"{m.name} {m.description}".lower())
    ]
    return page(found, at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelPublic)
def add_model(request: Request, response: Response, data: ModelCreate, actor: Principal = WRITE) -> ModelPublic:
    """Register ``source`` (``hf:org/name[@revision]``, ``org/name``, or a folder on the server) as a new model,
    or with ``new_version`` as the next version of an existing one. Answers once the files are in the store."""
    app = request.app.state
    added = models.add_model(db=app.db, actor=actor, data=data, cache_dir=app.settings.models_dir)
    response.headers["Location"] = f"{request.url.path}/{added.name}"
    return added


@router.get("/{name}", response_model=ModelPublic)
def get_model(request: Request, name: str, _actor: Principal = READ) -> ModelPublic:
    return models.get_model(db=request.app.state.db, name=name)


@router.get("/{name}/versions", response_model=list[ModelVersionPublic])
def model_versions(request: Request, name: str, _actor: Principal = READ) -> list[ModelVersionPublic]:
    return models.get_model(db=request.app.state.db, name=name).versions


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic)
def model_version(request: Request, name: str, version: int, _actor: Principal = READ) -> ModelVersionPublic:
    found = models.get_model(db=request.app.state.db, name=name).versions
    for v in found:
        if v.version == version:
            return v
    have = ", ".join(str(v.version) for v in found)
    raise NotFound(f"model {name!r} has no version {version}", hint=f"its versions: {have}")


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(request: Request, name: str, actor: Principal = WRITE) -> None:
    """Remove a model no deployment uses, with its versions."""
    models.delete_model(db=request.app.state.db, actor=actor, name=name)
