"""``/datasets``: register a dataset version (from a file or folder on the server, a Hub dataset repo, or an
uploaded file streamed to disk), list, read, preview rows, token lengths against a base model, delete."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from studio import datastore
from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.errors import CoveError, InvalidSpec, to_wire
from studio.models import DatasetAdded, DatasetCreate, DatasetLengths, DatasetPreview, DatasetPublic
from studio.services import datasets
from studio.values import Principal

router = APIRouter(prefix="/datasets", tags=["datasets"])
READ, WRITE = allowed("datasets:read"), allowed("datasets:write")
NDJSON = "application/x-ndjson"
UPLOAD_PATH = "/datasets/upload"  # its body is streamed to disk, under COVE_MAX_UPLOAD_BYTES (not the API's limit)


@router.get("", response_model=Page[DatasetPublic])
def list_datasets(
    request: Request,
    at: Annotated[Window, Depends(window)],
    actor: Principal = READ,
    q: Annotated[str | None, Query(description="Part of the name or description.")] = None,
) -> Page[DatasetPublic]:
    """The datasets the caller may see, by name, with their versions."""
    found = [
        d
        for d in datasets.list_datasets(db=request.app.state.db, actor=actor)
        if q is None or q.lower() in f"{d.name} {d.description}".lower()
    ]
    return page(found, at)


def _answer(request: Request, response: Response, added: DatasetAdded) -> DatasetAdded:
    response.status_code = status.HTTP_200_OK if added.unchanged else status.HTTP_201_CREATED
    response.headers["Location"] = f"{request.url.path.removesuffix('/upload')}/{added.dataset.name}"
    return added


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetAdded,
    responses={200: {"description": "Unchanged (the newest version has this content), or with ?progress=true NDJSON"}},
)
def add_dataset(
    request: Request,
    response: Response,
    data: DatasetCreate,
    actor: Principal = WRITE,
    progress: Annotated[bool, Query(description="Stream progress as NDJSON while the files come.")] = False,
) -> Any:
    """Register ``source`` (``hf:org/name[@revision]``, or a file or folder on the server: admins) as a new dataset,
    or with ``new_version`` as the next version of one; 200 with ``unchanged`` when the newest version has the same
    content. With ``progress=true`` at once, as NDJSON: ``{"progress": "…"}`` lines, then ``{"added": …}`` or
    ``{"error": …}``."""
    app = request.app.state

    def add(said: Callable[[str], None] | None = None) -> DatasetAdded:
        return datasets.add_dataset(db=app.db, actor=actor, data=data, settings=app.settings, progress=said)

    if progress:
        return StreamingResponse(_progress_lines(add), media_type=NDJSON)
    return _answer(request, response, add())


def _progress_lines(add: Callable[[Callable[[str], None]], DatasetAdded]) -> Iterator[bytes]:
    said: queue.Queue[bytes | None] = queue.Queue()

    def run() -> None:
        try:
            added = add(lambda text: said.put(orjson.dumps({"progress": text}) + b"\n"))
            said.put(orjson.dumps({"added": added.model_dump(mode="json")}) + b"\n")
        except CoveError as exc:
            said.put(orjson.dumps(to_wire(exc)) + b"\n")
        finally:
            said.put(None)

    threading.Thread(target=run, name="dataset-add", daemon=True).start()
    while (line := said.get()) is not None:
        yield line


def _columns(given: list[str]) -> dict[str, str]:
    found = {}
    for pair in given:
        part, sep, column = pair.partition("=")
        if not sep or not part.strip():
            raise InvalidSpec(f"column {pair!r} is not PART=COLUMN", hint="e.g. column=prompt=question")
        found[part.strip()] = column.strip()
    return found


@router.post(UPLOAD_PATH.removeprefix("/datasets"), status_code=status.HTTP_201_CREATED, response_model=DatasetAdded)
async def upload_dataset(
    request: Request,
    response: Response,
    name: str,
    filename: Annotated[str, Query(description="The file's name: its suffix says its kind, its name the split.")],
    description: str = "",
    group: str | None = None,
    format: str | None = None,
    column: Annotated[list[str], Query(description="PART=COLUMN, once per part to correct.")] = [],  # noqa: B006
    new_version: bool = False,
    actor: Principal = WRITE,
) -> DatasetAdded:
    """Register the request's body (one .jsonl, .json, .csv or .parquet file, streamed to disk as it comes, up to
    COVE_MAX_UPLOAD_BYTES) as a dataset, as ``POST /datasets`` does with a source."""
    app = request.app.state
    data = DatasetCreate(
        name=name,
        source=filename,
        description=description,
        group=group,
        format=format,
        columns=_columns(column),
        new_version=new_version,
    )
    incoming = datastore.Incoming(filename, app.settings.datasets_dir, limit=app.settings.max_upload_bytes)
    try:
        async for chunk in request.stream():
            incoming.write(chunk)
    except BaseException:
        incoming.abort()
        raise
    upload = datasets.Upload(incoming.finish(), filename)
    added = await run_in_threadpool(
        lambda: datasets.add_dataset(db=app.db, actor=actor, data=data, settings=app.settings, upload=upload)
    )
    return _answer(request, response, added)


@router.get("/{name}", response_model=DatasetPublic)
def get_dataset(request: Request, name: str, actor: Principal = READ) -> DatasetPublic:
    return datasets.get_dataset(db=request.app.state.db, actor=actor, name=name)


@router.get("/{name}/preview", response_model=DatasetPreview)
def preview(
    request: Request,
    name: str,
    version: int | None = None,
    split: str = "train",
    rows: Annotated[int, Query(ge=1, le=datasets.PREVIEW_MAX)] = 5,
    model: Annotated[str | None, Query(description="A base model: show what is trained on.")] = None,
    model_version: int | None = None,
    max_length: Annotated[int, Query(ge=1)] = 1024,
    actor: Principal = READ,
) -> DatasetPreview:
    """The first rows of a split: raw, as messages (or what is wrong), and with ``model`` the rendered text in
    segments marked trained or not, and kept or cut by ``max_length``."""
    return datasets.preview(
        db=request.app.state.db,
        actor=actor,
        name=name,
        version=version,
        split=split,
        rows=rows,
        model=model,
        model_version=model_version,
        max_length=max_length,
    )


@router.get("/{name}/lengths", response_model=DatasetLengths)
def lengths(
    request: Request,
    name: str,
    model: str,
    version: int | None = None,
    model_version: int | None = None,
    max_length: Annotated[int, Query(ge=1)] = 1024,
    split: str = "train",
    bins: Annotated[int, Query(ge=1, le=200)] = 20,
    actor: Principal = READ,
) -> DatasetLengths:
    """Token lengths of a split rendered with ``model``'s chat template: P50/P95/P99/max, a histogram, and the
    rows ``max_length`` would truncate or leave without trainable tokens, and those dropped as unfit."""
    return datasets.lengths(
        db=request.app.state.db,
        actor=actor,
        name=name,
        model=model,
        version=version,
        model_version=model_version,
        max_length=max_length,
        split=split,
        bins=bins,
    )


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(request: Request, name: str, actor: Principal = WRITE) -> None:
    """Remove a dataset no fine-tune uses, with its versions (and their files, unless another version shares
    them)."""
    app = request.app.state
    datasets.delete_dataset(db=app.db, actor=actor, name=name, settings=app.settings)
