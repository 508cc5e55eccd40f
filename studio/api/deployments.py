"""``/deployments``: create, read, list (with filters), scale and autoscale (If-Match), delete, logs, events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from studio.api.auth import allowed
from studio.api.paging import Page, Window, read_page, window
from studio.errors import InvalidSpec
from studio.models import DeploymentCreate, DeploymentPublic, EventPublic
from studio.services import deployments, events
from studio.values import Autoscale, Principal, Status

router = APIRouter(prefix="/deployments", tags=["deployments"])
READ, WRITE = allowed("deployments:read"), allowed("deployments:write")


class DeploymentUpdate(BaseModel):
    """What may change on a deployment: its replica count, or its autoscale bounds (null turns autoscaling off).
    Everything else is fixed at creation: delete and create again, or deploy a new name."""

    model_config = ConfigDict(extra="forbid")
    replicas: int | None = Field(default=None, ge=0, le=64)
    autoscale: Autoscale | None = None
    # the most a request may ask (null: the studio's default); given together, both are set
    max_tokens_cap: int | None = Field(default=None, ge=1, le=10_000_000)
    n_cap: int | None = Field(default=None, ge=1, le=128)


class Logs(BaseModel):
    lines: list[str]


def etag(dep: DeploymentPublic) -> str:
    return f'"{dep.generation}"'


def generation_of(if_match: str | None) -> int | None:
    """The generation an If-Match header names (``"7"``, ``W/"7"`` or ``7``); None when there is none or ``*``."""
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidSpec(f"If-Match {if_match!r} is not an ETag this API gave", hint="send the ETag of a GET")
    return int(text)


def answered(response: Response, dep: DeploymentPublic) -> DeploymentPublic:
    response.headers["ETag"] = etag(dep)
    return dep


@router.get("", response_model=Page[DeploymentPublic])
def list_deployments(
    request: Request,
    at: Annotated[Window, Depends(window)],
    actor: Principal = READ,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    model: str | None = None,
    pool: str | None = None,
    owner: str | None = None,
    group: str | None = None,
) -> Page[DeploymentPublic]:
    """The deployments the caller may see, by name, filtered by any of status, model, pool, owner and group."""
    db, filters = request.app.state.db, deployments.Filters(status_, model, pool, owner, group)
    found = deployments.list_deployments(db=db, actor=actor, filters=filters, offset=at.offset, limit=at.limit)
    return read_page(found, total=deployments.count_deployments(db=db, actor=actor, filters=filters), at=at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentPublic)
def create_deployment(
    request: Request, response: Response, data: DeploymentCreate, actor: Principal = WRITE
) -> DeploymentPublic:
    """Deploy a model version; the controller starts it (follow ``status``, or the client's ``wait_ready``)."""
    dep = deployments.create_deployment(db=request.app.state.db, actor=actor, data=data)
    response.headers["Location"] = f"{request.url.path}/{dep.name}"
    return answered(response, dep)


@router.get("/{name}", response_model=DeploymentPublic)
def get_deployment(request: Request, response: Response, name: str, actor: Principal = READ) -> DeploymentPublic:
    """One deployment; its ETag is its generation, for If-Match on updates."""
    return answered(response, deployments.get_deployment(db=request.app.state.db, actor=actor, name=name))


@router.patch("/{name}", response_model=DeploymentPublic)
def update_deployment(
    request: Request,
    response: Response,
    name: str,
    data: Annotated[DeploymentUpdate, Body()],
    actor: Principal = WRITE,
    if_match: Annotated[str | None, Header()] = None,
) -> DeploymentPublic:
    """Scale (``replicas``) or set autoscaling (``autoscale``; null: off). With If-Match, only if nobody changed it
    since (409 with the current generation otherwise)."""
    db, generation = request.app.state.db, generation_of(if_match)
    if "replicas" in data.model_fields_set and "autoscale" in data.model_fields_set:
        raise InvalidSpec("give replicas or autoscale, not both", hint="autoscaling sets the replica count itself")
    capping = {"max_tokens_cap", "n_cap"} & data.model_fields_set
    if capping and {"replicas", "autoscale"} & data.model_fields_set:
        raise InvalidSpec("give caps apart from replicas or autoscale", hint="send two requests")
    if capping:
        current = deployments.get_deployment(db=db, actor=actor, name=name)
        dep = deployments.set_caps(
            db=db, actor=actor, name=name, generation=generation,
            max_tokens_cap=data.max_tokens_cap if "max_tokens_cap" in capping else current.max_tokens_cap,
            n_cap=data.n_cap if "n_cap" in capping else current.n_cap,
        )  # fmt: skip
    elif "autoscale" in data.model_fields_set:
        dep = deployments.set_autoscale(db=db, actor=actor, name=name, autoscale=data.autoscale, generation=generation)
    elif data.replicas is not None:
        dep = deployments.scale_deployment(db=db, actor=actor, name=name, replicas=data.replicas, generation=generation)
    else:
        raise InvalidSpec("nothing to change", hint="give replicas, autoscale, max_tokens_cap or n_cap")
    return answered(response, dep)


@router.delete("/{name}", status_code=status.HTTP_202_ACCEPTED, response_model=DeploymentPublic)
def delete_deployment(request: Request, name: str, actor: Principal = WRITE) -> DeploymentPublic:
    """Stop its replicas and remove it (it shows as Deleting until the controller is done)."""
    return deployments.delete_deployment(db=request.app.state.db, actor=actor, name=name)


@router.get("/{name}/logs", response_model=Logs)
def deployment_logs(
    request: Request, name: str, tail: Annotated[int, Query(ge=1, le=10_000)] = 100, actor: Principal = READ
) -> Logs:
    """The last ``tail`` lines of its newest replica's log, read where it runs."""
    return Logs(lines=request.app.state.logs.read(name, actor=actor, tail=tail))


@router.get("/{name}/events", response_model=list[EventPublic])
def deployment_events(
    request: Request, name: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50, actor: Principal = READ
) -> Any:
    """What happened to it, newest first."""
    db = request.app.state.db
    deployments.get_deployment(db=db, actor=actor, name=name)  # NotFound / Forbidden as for the deployment
    return events.list_events(db=db, kind=deployments.KIND, name=name, limit=limit)
