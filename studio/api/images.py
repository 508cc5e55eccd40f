"""``/images``: runtime images — list with filters, read one (newest version unless ``?version=``), register one
(a Dockerfile is queued for building), and build one again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.errors import NotFound
from studio.models import ImageCreate, ImagePublic
from studio.services import images
from studio.values import BuildStatus, Principal, RuntimeKind

router = APIRouter(prefix="/images", tags=["images"])
READ, WRITE = allowed("images:read"), allowed("images:write")


@router.get("", response_model=Page[ImagePublic])
def list_images(
    request: Request,
    at: Annotated[Window, Depends(window)],
    _actor: Principal = READ,
    name: str | None = None,
    runtime: RuntimeKind | None = None,
    build_status: BuildStatus | None = None,
    builtin: bool | None = None,
) -> Page[ImagePublic]:
    """Every image version (everyone reads them), by name and newest first, filtered by name, runtime, build status
    and whether Cove ships it."""
    wanted = {"name": name, "runtime": runtime, "build_status": build_status, "builtin": builtin}
    found = [
        i
        for i in images.list_images(db=request.app.state.db)
        if all(v is None or getattr(i, k) == v for k, v in wanted.items())
    ]
    return page(found, at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ImagePublic)
def add_image(request: Request, response: Response, data: ImageCreate, actor: Principal = WRITE) -> ImagePublic:
    """Register an image version. With a ``dockerfile`` the controller builds it and pushes it to ``ref`` (default:
    the server's registry); follow ``build_status``. A ``local_command`` is for admins only."""
    app = request.app.state
    added = images.add_image(db=app.db, actor=actor, data=data, registry=app.settings.registry)
    response.headers["Location"] = f"{request.url.path}/{added.name}?version={added.version}"
    return added


@router.get("/{name}", response_model=ImagePublic)
def get_image(
    request: Request,
    name: str,
    _actor: Principal = READ,
    version: Annotated[str | None, Query(description="The version (tag); default: the newest registered.")] = None,
) -> ImagePublic:
    found = [i for i in images.list_images(db=request.app.state.db) if i.name == name]
    for image in found:
        if version is None or image.version == version:
            return image
    if not found:
        raise NotFound(f"no image {name!r}", hint="see `cove image list`")
    have = ", ".join(i.version for i in found)
    raise NotFound(f"image {name!r} has no version {version!r}", hint=f"its versions: {have}")


@router.post("/{name}/versions/{version}/rebuild", status_code=status.HTTP_202_ACCEPTED, response_model=ImagePublic)
def rebuild_image(request: Request, name: str, version: str, actor: Principal = WRITE) -> ImagePublic:
    """Build a Dockerfile image again (after a failure, or when its base moved); 409 while it is being built."""
    return images.rebuild_image(db=request.app.state.db, actor=actor, name=name, version=version)
