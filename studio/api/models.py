"""``/models``: the catalog — register a model (or a new version of one) from the Hub or a folder the server can
read, list with filters, read, delete."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.errors import CoveError, NotFound, to_wire
from studio.memplan import Hardware, Plan
from studio.models import ModelCreate, ModelPublic, ModelVersionPublic
from studio.services import models, plans
from studio.values import Principal

router = APIRouter(prefix="/models", tags=["models"])
READ, WRITE = allowed("models:read"), allowed("models:write")
NDJSON = "application/x-ndjson"


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


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublic,
    responses={200: {"description": "With ?progress=true: NDJSON lines", "content": {NDJSON: {}}}},
)
def add_model(
    request: Request,
    response: Response,
    data: ModelCreate,
    actor: Principal = WRITE,
    progress: Annotated[bool, Query(description="Stream progress as NDJSON while the files come.")] = False,
) -> Any:
    """Register ``source`` (``hf:org/name[@revision]``, ``org/name``, or a folder on the server) as a new model,
    or with ``new_version`` as the next version of an existing one. Answers once the files are in the store; with
    ``progress=true`` at once, as NDJSON: ``{"progress": "…"}`` lines while the files come, then ``{"model": …}``
    or ``{"error": …}`` (the API's error shape)."""
    app = request.app.state

    def add(said: Callable[[str], None] | None = None) -> ModelPublic:
        return models.add_model(db=app.db, actor=actor, data=data, cache_dir=app.settings.models_dir, progress=said)

    if progress:
        return StreamingResponse(_progress_lines(add), media_type=NDJSON)
    added = add()
    response.headers["Location"] = f"{request.url.path}/{added.name}"
    return added


def _progress_lines(add: Callable[[Callable[[str], None]], ModelPublic]) -> Iterator[bytes]:
    """``add`` run on a thread of its own, what it says as NDJSON lines as it says it, then its result."""
    said: queue.Queue[bytes | None] = queue.Queue()

    def run() -> None:
        try:
            added = add(lambda text: said.put(orjson.dumps({"progress": text}) + b"\n"))
            said.put(orjson.dumps({"model": added.model_dump(mode="json")}) + b"\n")
        except CoveError as exc:
            said.put(orjson.dumps(to_wire(exc)) + b"\n")
        finally:
            said.put(None)

    threading.Thread(target=run, name="model-add", daemon=True).start()
    while (line := said.get()) is not None:
        yield line


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


@router.get("/{name}/plan", response_model=Plan)
def model_plan(
    request: Request,
    name: str,
    hardware: Annotated[Hardware, Query()],
    _actor: Principal = READ,
    version: Annotated[int | None, Query(description="The version (default: the newest).")] = None,
    parameters: Annotated[int | None, Query(gt=0, description="Parameter count, if the config's is wrong.")] = None,
) -> Plan:
    """Will this version serve on ``gpus`` GPUs (or slices) of ``gpu_memory_mib`` each, and how: weights and KV
    cache per GPU, concurrent requests at ``context``, the longest context at ``concurrency``, and the runtime's
    flags (docs/memory-plan.md). A plan that does not fit says why in ``reason``; it is still a 200."""
    return plans.plan_version(
        db=request.app.state.db, model=name, version=version, hardware=hardware, parameters=parameters
    )


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(request: Request, name: str, actor: Principal = WRITE) -> None:
    """Remove a model no deployment uses, with its versions."""
    models.delete_model(db=request.app.state.db, actor=actor, name=name)
