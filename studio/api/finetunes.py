"""``/finetunes``: create a fine-tune job, follow it (status, progress, loss curve, logs, events), cancel, resume,
delete; and ``/finetunes/{name}/progress``, where the running job reports with its own token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel

from studio.api.auth import allowed, bearer
from studio.api.paging import Page, Window, read_page, window
from studio.finetuning import Progress
from studio.models import EventPublic, FineTuneCreate, FineTunePreview, FineTunePublic
from studio.services import events, finetunes
from studio.values import Principal

router = APIRouter(prefix="/finetunes", tags=["finetunes"])
READ, WRITE = allowed("finetunes:read"), allowed("finetunes:write")


class Logs(BaseModel):
    lines: list[str]


@router.get("", response_model=Page[FineTunePublic])
def list_finetunes(
    request: Request, at: Annotated[Window, Depends(window)], actor: Principal = READ
) -> Page[FineTunePublic]:
    """The jobs the caller may see, newest first."""
    db = request.app.state.db
    found = finetunes.list_finetunes(db=db, actor=actor, offset=at.offset, limit=at.limit)
    return read_page(found, total=finetunes.count_finetunes(db=db, actor=actor), at=at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=FineTunePublic)
def create_finetune(
    request: Request, response: Response, data: FineTuneCreate, actor: Principal = WRITE
) -> FineTunePublic:
    """Fine-tune a model version on a dataset version; the controller starts it (follow ``status`` and
    ``progress``, or the client's ``wait``). A job that does not fit its pool is refused with what is free, or
    queued where the cluster queues jobs (Kueue)."""
    settings = request.app.state.settings
    job = finetunes.create_finetune(db=request.app.state.db, actor=actor, data=data, queued=bool(settings.kueue_queue))
    response.headers["Location"] = f"{request.url.path}/{job.name}"
    return job


@router.post("/preview", response_model=FineTunePreview)
def preview_finetune(request: Request, data: FineTuneCreate, actor: Principal = READ) -> FineTunePreview:
    """What creating ``data`` would make, without making it: the settings with the defaults for the base's size,
    the modules LoRA may target, estimated memory and time, and whether it fits its pool now."""
    return finetunes.preview_finetune(db=request.app.state.db, actor=actor, data=data)


@router.get("/{name}", response_model=FineTunePublic)
def get_finetune(request: Request, name: str, actor: Principal = READ) -> FineTunePublic:
    """One job: its status, newest progress, loss curve, metrics, and the version it registered."""
    return finetunes.get_finetune(db=request.app.state.db, actor=actor, name=name)


@router.post("/{name}/cancel", response_model=FineTunePublic)
def cancel_finetune(request: Request, name: str, actor: Principal = WRITE) -> FineTunePublic:
    """Stop it (the trainer saves a checkpoint first); it becomes Cancelled, and may be resumed."""
    return finetunes.cancel_finetune(db=request.app.state.db, actor=actor, name=name)


@router.post("/{name}/resume", response_model=FineTunePublic)
def resume_finetune(request: Request, name: str, actor: Principal = WRITE) -> FineTunePublic:
    """A new attempt of a failed or cancelled job, from its newest checkpoint."""
    settings = request.app.state.settings
    return finetunes.resume_finetune(db=request.app.state.db, actor=actor, name=name, queued=bool(settings.kueue_queue))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_finetune(request: Request, name: str, actor: Principal = WRITE) -> Response:
    """Forget an ended job and its checkpoints (the version it registered stays)."""
    folders = request.app.state.settings.finetunes_dir
    finetunes.delete_finetune(db=request.app.state.db, actor=actor, name=name, folders=folders)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/logs", response_model=Logs)
def finetune_logs(
    request: Request, name: str, tail: Annotated[int, Query(ge=1, le=10_000)] = 100, actor: Principal = READ
) -> Logs:
    """The last ``tail`` lines of its newest attempt's log."""
    job = finetunes.get_finetune(db=request.app.state.db, actor=actor, name=name)
    saved = finetunes.saved_log(request.app.state.settings.finetunes_dir, name, job.attempt)
    task = finetunes.task_name(name, job.attempt)
    return Logs(lines=request.app.state.logs.read_task(task=task, cluster=job.cluster, saved=saved, tail=tail))


@router.get("/{name}/events", response_model=list[EventPublic])
def finetune_events(
    request: Request, name: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50, actor: Principal = READ
) -> Any:
    """What happened to it, newest first."""
    db = request.app.state.db
    finetunes.get_finetune(db=db, actor=actor, name=name)  # NotFound / Forbidden as for the job
    return events.list_events(db=db, kind=finetunes.KIND, name=name, limit=limit)


@router.post("/{name}/progress", status_code=status.HTTP_204_NO_CONTENT)
def report_progress(request: Request, name: str, progress: Progress) -> Response:
    """Where the running job reports (``Authorization: Bearer`` its own token, from its plan); no user token
    may report."""
    finetunes.report(db=request.app.state.db, name=name, token=bearer(request), progress=progress)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
