"""Declarative specs over the API: ``POST /apply`` (with ``dry_run``: the diff), ``POST /delete-specs``,
``GET /specs/{kind}[/{name}]`` (objects as documents), ``GET /specs/schema.json`` (the documents' JSON Schema).

Documents are validated here by ``studio.specs`` rather than by FastAPI, so an invalid one is reported as the CLI
reports a file: ``request: document 2 (Deployment demo-chat): spec.replicas: …``. Each document needs its noun's
scope (``deployments:write`` for a Deployment; ``…:read`` for a dry run).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from studio import access, specs
from studio.api.auth import Caller, caller
from studio.errors import Forbidden, NotFound
from studio.services import specs as applying
from studio.specs import AnyDocument, Kind, Result
from studio.values import Principal

router = APIRouter(tags=["specs"])

NOUN = {
    Kind.MODEL: "models",
    Kind.DEPLOYMENT: "deployments",
    Kind.IMAGE: "images",
    Kind.KEY: "keys",
    Kind.POOL: "pools",
}


class Documents(BaseModel):
    documents: list[dict[str, Any]] = Field(description="Spec documents (docs/cove-spec.schema.json), as parsed YAML.")


class ApplyRequest(Documents):
    dry_run: bool = False  # only say what would change


class Results(BaseModel):
    results: list[Result]


def _permitted(who: Caller, docs: list[AnyDocument], verb: str) -> Principal:
    """The principal, once the token holds ``NOUN:verb`` for every kind of document (and, for keys, at most its
    own scopes: a token makes no token stronger than itself)."""
    for kind in sorted({d.kind for d in docs}):
        who.require(f"{NOUN[kind]}:{verb}")
    if who.scopes is not None:
        asked = {s for d in docs if isinstance(d, specs.KeyDocument) for s in d.spec.scopes or []}
        beyond = sorted(s for s in asked if not access.grants(who.scopes, s))
        if beyond:
            raise Forbidden(
                f"token {who.token!r} may not make a token with more than its own scopes: {', '.join(beyond)}",
                hint="make it with fewer scopes, or from the studio or with a token that has them",
            )
    return who.principal


def _context(request: Request, actor: Principal) -> applying.Context:
    app = request.app.state
    return applying.Context(db=app.db, actor=actor, cache_dir=app.settings.models_dir, registry=app.settings.registry)


@router.post("/apply", response_model=Results)
def apply(request: Request, body: ApplyRequest, who: Annotated[Caller, Depends(caller)]) -> Results:
    """Create what the documents describe and is missing, update what may change (replicas, autoscale, a model's
    description and recommendations), leave the rest: per document ``created``, ``updated`` or ``unchanged``
    with the changes. A change to a field fixed at creation refuses the whole apply (422), saying how to make it."""
    docs = specs.parse_documents(body.documents, where="request")
    actor = _permitted(who, docs, "read" if body.dry_run else "write")
    return Results(results=applying.apply(_context(request, actor), docs, dry_run=body.dry_run))


@router.post("/delete-specs", response_model=Results)
def delete(request: Request, body: Documents, who: Annotated[Caller, Depends(caller)]) -> Results:
    """Remove what the documents name, dependents first: ``deleted``, ``absent``, ``kept`` (images) or
    ``refused`` (with why: a model still deployed)."""
    docs = specs.parse_documents(body.documents, where="request")
    actor = _permitted(who, docs, "write")
    return Results(results=applying.delete(_context(request, actor), docs))


@router.get("/specs/schema.json")
def schema() -> dict[str, Any]:
    """The JSON Schema of one spec document (also docs/cove-spec.schema.json)."""
    return specs.schema()


def kind_of(text: str) -> Kind:
    """``Deployment``, ``deployment`` or ``deployments``."""
    for kind in Kind:
        if text.lower() in (kind.value.lower(), kind.value.lower() + "s"):
            return kind
    raise NotFound(f"{text!r} is not a kind of spec", hint=f"use one of {', '.join(k.value for k in Kind)}")


@router.get("/specs/{kind}")
def list_documents(request: Request, kind: str, who: Annotated[Caller, Depends(caller)]) -> list[dict[str, Any]]:
    """Every object of ``kind`` the caller may see, as documents (``cove get KIND -o yaml``)."""
    found = kind_of(kind)
    actor = who.require(f"{NOUN[found]}:read")
    return [specs.dump(d) for d in applying.listed(db=request.app.state.db, actor=actor, kind=found)]


@router.get("/specs/{kind}/{name}")
def get_document(request: Request, kind: str, name: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
    """One object as a document: applying it changes nothing. Images: ``name`` (the newest) or ``name:version``."""
    found = kind_of(kind)
    actor = who.require(f"{NOUN[found]}:read")
    doc = applying.current(db=request.app.state.db, actor=actor, kind=found, name=name)
    if doc is None:
        raise NotFound(f"no {found.value.lower()} named {name!r}", hint=f"see `cove get {found.value.lower()}`")
    return specs.dump(doc)
