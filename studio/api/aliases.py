"""A model's aliases, its promotion gate, promotion and rollback (``/models/{name}/…``), and a deployment's canary
(``/deployments/{name}/canary``): thin over ``services.aliases`` and ``services.canary``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from studio.api.auth import allowed
from studio.gate import GateConfig, Results
from studio.models import AliasMovePublic, DeploymentPublic, ModelPublic, PromoteRequest, Promotion
from studio.services import aliases, canary
from studio.values import Principal

router = APIRouter(tags=["models"])
READ, WRITE = allowed("models:read"), allowed("models:write")
DEPLOY = allowed("deployments:write")


class AliasMoveRequest(BaseModel):
    version: int = Field(ge=1)


class CanaryRequest(BaseModel):
    share: int = Field(ge=0, le=99, description="Percent of requests the staging version answers; 0 turns it off.")


@router.get("/models/{name}/aliases", response_model=list[AliasMovePublic])
def alias_history(request: Request, name: str, _actor: Principal = READ) -> list[AliasMovePublic]:
    """Every move of the model's aliases, newest first (where each points now: the model's ``aliases``)."""
    return aliases.history(db=request.app.state.db, model=name)


@router.put("/models/{name}/aliases/{alias}", response_model=Promotion)
def move_alias(request: Request, name: str, alias: str, data: AliasMoveRequest, actor: Principal = WRITE) -> Promotion:
    """Point ``staging`` at a version (``production`` goes through the gate, with no results: see ``promote``)."""
    return aliases.set_alias(db=request.app.state.db, actor=actor, model=name, alias=alias, version=data.version)


@router.post("/models/{name}/promote", response_model=Promotion)
def promote(request: Request, name: str, data: PromoteRequest, actor: Principal = WRITE) -> Promotion:
    """Move production (or ``to``) onto ``version`` if the model's gate passes the results given; a refusal is a
    409 ``GateRefused`` whose ``fields`` name each failing check with its numbers. An admin may override with
    ``override_reason`` (kept in the audit trail)."""
    results = {v: Results(r.scores, r.slo_met, r.source, r.source) for v, r in data.results.items()}  # as typed in
    return aliases.promote(
        db=request.app.state.db,
        actor=actor,
        model=name,
        version=data.version,
        to=data.to,
        override_reason=data.override_reason,
        results=results,
    )


@router.post("/models/{name}/rollback", response_model=Promotion)
def rollback(request: Request, name: str, actor: Principal = WRITE) -> Promotion:
    """Move production back to the version it pointed at before."""
    return aliases.rollback(db=request.app.state.db, actor=actor, model=name)


@router.put("/models/{name}/gate", response_model=ModelPublic)
def set_gate(request: Request, name: str, data: GateConfig, actor: Principal = WRITE) -> ModelPublic:
    """What a version must show to become production; an empty object: promotes freely."""
    return aliases.set_gate(db=request.app.state.db, actor=actor, model=name, gate=data)


@router.put("/deployments/{name}/canary", response_model=DeploymentPublic)
def set_canary(request: Request, name: str, data: CanaryRequest, actor: Principal = DEPLOY) -> DeploymentPublic:
    """Send ``share`` percent of the deployment's requests to its model's staging version (it must follow
    production); 0 turns the canary off."""
    return canary.set_canary(db=request.app.state.db, actor=actor, name=name, share=data.share)
