"""``/evaluations``: evaluate a model version on a dataset version's split (the controller runs it), list the
results per model and version, show one with every example, delete one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from studio.api.auth import allowed
from studio.api.paging import Page, Window, read_page, window
from studio.models import EvaluationCreate, EvaluationPublic
from studio.services import evaluations
from studio.values import Principal

router = APIRouter(prefix="/evaluations", tags=["evaluations"])
READ, WRITE = allowed("evaluations:read"), allowed("evaluations:write")


@router.get("", response_model=Page[EvaluationPublic])
def list_evaluations(
    request: Request,
    at: Annotated[Window, Depends(window)],
    model: str | None = None,
    version: Annotated[int | None, Query(ge=1)] = None,
    actor: Principal = READ,
) -> Page[EvaluationPublic]:
    """The evaluations the caller may see (of ``model``, of its ``version``), newest first, without examples."""
    db = request.app.state.db
    found = evaluations.list_evaluations(
        db=db, actor=actor, model=model, version=version, offset=at.offset, limit=at.limit
    )
    total = evaluations.count_evaluations(db=db, actor=actor, model=model, version=version)
    return read_page(found, total=total, at=at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EvaluationPublic)
def create_evaluation(
    request: Request, response: Response, data: EvaluationCreate, actor: Principal = WRITE
) -> EvaluationPublic:
    """Evaluate a model version, served by ``deployment``, on a dataset version's split with the scorers given;
    the controller runs it (follow ``status``, ``done`` and ``total``). A broken scorer (a pattern that does not
    compile, a schema that is not valid) or a deployment serving another version is refused at once."""
    created = evaluations.create_evaluation(db=request.app.state.db, actor=actor, data=data)
    response.headers["Location"] = f"{request.url.path}/{created.id}"
    return created


@router.get("/{evaluation_id}", response_model=EvaluationPublic)
def get_evaluation(request: Request, evaluation_id: int, actor: Principal = READ) -> EvaluationPublic:
    """One evaluation: its aggregates per scorer and every example (prompt, reference, prediction, scores)."""
    return evaluations.get_evaluation(db=request.app.state.db, actor=actor, evaluation_id=evaluation_id)


@router.delete("/{evaluation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_evaluation(request: Request, evaluation_id: int, actor: Principal = WRITE) -> Response:
    """Forget an ended evaluation."""
    evaluations.delete_evaluation(db=request.app.state.db, actor=actor, evaluation_id=evaluation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
