"""Applying specs: make the objects documents describe (``studio.specs``) so, through the other services, as the
acting principal.

``apply`` first plans every document (what exists, what would change, what may not), so a refused change, an
unknown runtime recommendation or a ``versionRequired`` no image meets stops the whole apply before anything is
done; then it creates what is missing and updates what may change, in dependency order. A second apply of the same
documents changes nothing and says "unchanged". ``dry_run`` returns the plan. ``delete`` removes what documents
name, in the reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from studio.access import check_admin
from studio.db import Database
from studio.errors import Conflict, CoveError, Forbidden, InvalidSpec, NotFound, invalid, invalid_fields
from studio.models import ApiKeyCreate, DeploymentCreate, ImageCreate, ModelCreate, ModelPublic, PoolPublic
from studio.models import PoolSpec as PoolSettings
from studio.services import deployments, images, keys, models, pools
from studio.specs import (
    DETECTED,
    Action,
    AnyDocument,
    Change,
    DeploymentDocument,
    ImageDocument,
    KeyDocument,
    Kind,
    ModelDocument,
    PoolDocument,
    Recommendation,
    Result,
    diff,
    document,
    identity,
    newest,
    ordered,
    refused,
    satisfies,
)
from studio.values import Principal, Resources, SourceKind

HOW_TO_CHANGE = {
    Kind.DEPLOYMENT: "delete it and apply again (`cove delete -f FILE`, then `cove apply -f FILE`), or give the "
    "deployment a new name",
    Kind.MODEL: "register the new source as a new version (`cove model add NAME SOURCE --new-version`) and deploy "
    "that, or give the model a new name",
    Kind.IMAGE: "register a new version of the image (a new spec.version)",
    Kind.KEY: "revoke it (`cove delete -f FILE`) and apply a key of another name",
    Kind.POOL: "apply a pool of another name on that cluster and deploy there",
}


@dataclass(frozen=True)
class Context:
    """Where applying happens: the database, who acts, and where model files and built images go."""

    db: Database
    actor: Principal
    cache_dir: Path
    registry: str = ""


# ------------------------------------------------------------------------------------------------ current state


def _source_of(model: ModelPublic) -> str:
    latest = model.latest
    if latest.source_kind == SourceKind.HF:
        return f"hf:{latest.source}" + (f"@{latest.revision}" if latest.revision else "")
    return latest.source


def _model_document(model: ModelPublic) -> AnyDocument:
    spec: dict[str, Any] = {"source": _source_of(model), "description": model.description}
    spec["deployments"] = [r.model_dump(mode="json", by_alias=True) for r in model.recommendations]
    return document(Kind.MODEL, model.name, spec, model.group)


def _pool_document(pool: PoolPublic) -> AnyDocument:
    return document(Kind.POOL, pool.name, pool.model_dump(mode="json", exclude={"name", "detected"}))


def _image_documents(db: Database, name: str | None) -> list[AnyDocument]:
    found = []
    wanted, _, version = (name or "").partition(":")
    for image in images.list_images(db=db):
        if name is not None and (image.name != wanted or (version and image.version != version)):
            continue
        spec = image.model_dump(
            mode="json",
            include={"version", "runtime", "ref", "local_command", "health_path", "dockerfile", "description"},
        )
        found.append(document(Kind.IMAGE, image.name, spec))
    return found


def current(*, db: Database, actor: Principal, kind: Kind, name: str) -> AnyDocument | None:
    """The document form of the object ``kind``/``name`` as it is now (None: there is none). Images are named
    ``name`` (the newest version) or ``name:version``. Someone else's deployment is Forbidden, as everywhere."""
    try:
        if kind is Kind.MODEL:
            return _model_document(models.get_model(db=db, name=name))
        if kind is Kind.DEPLOYMENT:
            dep = deployments.get_deployment(db=db, actor=actor, name=name)
            spec: dict[str, Any] = {
                "model": f"{dep.model}:{dep.model_version}",
                "image": f"{dep.image}:{dep.image_version}",
                "pool": dep.pool,
                "resources": dep.resources.model_dump(mode="json"),
                "runtime_args": dep.runtime_args,
            }
            if dep.autoscale is not None:
                spec["autoscale"] = dep.autoscale.model_dump(mode="json")
            else:
                spec["replicas"] = dep.replicas
            spec |= {f: getattr(dep, f) for f in ("max_tokens_cap", "n_cap") if getattr(dep, f) is not None}
            return document(Kind.DEPLOYMENT, dep.name, spec, dep.group)
        if kind is Kind.POOL:
            return _pool_document(pools.get_pool(db=db, name=name))
    except NotFound:
        return None
    if kind is Kind.IMAGE:
        found = _image_documents(db, name)
        return found[0] if found else None  # images are listed newest first
    key = next((k for k in keys.list_keys(db=db, actor=actor) if k.name == name), None)
    if key is None:
        return None
    spec = key.model_dump(mode="json", include={"deployments", "scopes", "expires_at"}, exclude_none=True)
    return document(Kind.KEY, key.name, spec)


def listed(*, db: Database, actor: Principal, kind: Kind) -> list[AnyDocument]:
    """Every object of ``kind`` the actor may see, as documents, by name."""
    if kind is Kind.MODEL:
        return [_model_document(m) for m in models.list_models(db=db)]
    if kind is Kind.IMAGE:
        return _image_documents(db, None)
    if kind is Kind.POOL:
        return [_pool_document(usage.pool) for usage in pools.list_pools(db=db)]
    names = (
        [d.name for d in deployments.list_deployments(db=db, actor=actor)]
        if kind is Kind.DEPLOYMENT
        else [k.name for k in keys.list_keys(db=db, actor=actor) if k.revoked_at is None]
    )
    return [doc for n in names if (doc := current(db=db, actor=actor, kind=kind, name=n)) is not None]


# ------------------------------------------------------------------------------------------------ planning


@dataclass
class _Step:
    doc: AnyDocument
    now: AnyDocument | None
    changes: list[Change]
    action: Action
    create: Any = None  # the validated …Create of an object to make


def _recommendation(ctx: Context, batch: list[AnyDocument], doc: DeploymentDocument) -> Recommendation:
    name = doc.spec.model.partition(":")[0]
    runtime = doc.spec.recommended
    described = next((d for d in batch if isinstance(d, ModelDocument) and d.metadata.name == name), None)
    if described is not None and described.spec.deployments is not None:
        recommended = described.spec.deployments
    else:
        recommended = models.get_model(db=ctx.db, name=name).recommendations
    found = next((r for r in recommended if r.runtime == runtime), None)
    if found is None:
        have = ", ".join(r.runtime.value for r in recommended) or "none"
        raise InvalidSpec(
            f"spec.recommended: model {name!r} recommends no deployment on {runtime}; it recommends: {have}",
            hint="name one of those runtimes, or add one to the model's spec.deployments",
        )
    return found


def _image_for(ctx: Context, batch: list[AnyDocument], rec: Recommendation, now: AnyDocument | None) -> str:
    """The image a recommendation asks for: the one the deployment runs if it meets the constraint, else the
    newest registered (or described in this apply) of the runtime that does."""
    candidates = [(i.name, i.version) for i in images.list_images(db=ctx.db) if i.runtime == rec.runtime]
    candidates += [
        (d.metadata.name, d.spec.version)
        for d in batch
        if isinstance(d, ImageDocument) and d.spec.runtime == rec.runtime
    ]
    if isinstance(now, DeploymentDocument) and now.spec.image is not None:
        running = tuple(now.spec.image.partition(":")[::2])
        if running in candidates and satisfies(running[1], rec.version_required):
            return now.spec.image
    fitting = [(n, v) for n, v in candidates if satisfies(v, rec.version_required)]
    best = newest([v for _, v in fitting])
    if best is None:
        have = ", ".join(f"{n}:{v}" for n, v in candidates) or "none"
        raise InvalidSpec(
            f"spec.recommended: the recommendation for {rec.runtime} wants versionRequired "
            f"{rec.version_required!r}, which no registered {rec.runtime} image meets (there are: {have})",
            hint="register an image version that meets it (`cove image add`), or change the model's versionRequired",
        )
    image = next(n for n, v in fitting if v == best)
    return f"{image}:{best}"


def _resolved(ctx: Context, batch: list[AnyDocument], doc: AnyDocument, now: AnyDocument | None) -> AnyDocument:
    """``doc`` with what it leaves to Cove filled in: a folder source made absolute, a recommendation taken."""
    if isinstance(doc, ModelDocument) and doc.spec.source is not None:
        source = models.parse_source(doc.spec.source)
        text = source.ref if source.kind == SourceKind.LOCAL else f"hf:{source.ref}"
        text += f"@{source.revision}" if source.revision else ""
        return doc.model_copy(update={"spec": doc.spec.model_copy(update={"source": text})})
    if isinstance(doc, DeploymentDocument) and doc.spec.recommended is not None:
        rec = _recommendation(ctx, batch, doc)
        filled: dict[str, Any] = {}
        if doc.spec.image is None:
            filled["image"] = _image_for(ctx, batch, rec, now)
        elif ":" in doc.spec.image and not satisfies(doc.spec.image.partition(":")[2], rec.version_required):
            raise InvalidSpec(
                f"spec.image: {doc.spec.image} does not meet the recommendation for {rec.runtime}, which wants "
                f"versionRequired {rec.version_required!r}",
                hint="name an image version that meets it, or leave spec.image out to have one chosen",
            )
        if doc.spec.resources is None:
            filled["resources"] = rec.resource_requirements.resources()
        if doc.spec.runtime_args is None:
            filled["runtime_args"] = rec.custom_runtime_args
        return doc.model_copy(update={"spec": doc.spec.model_copy(update=filled)})
    return doc


def _validated(make: Any, **data: Any) -> Any:
    try:
        return make(**data)
    except ValidationError as exc:
        raise invalid(invalid_fields(exc.errors(), prefix=("spec",))) from exc


def _creation(doc: AnyDocument) -> Any:
    """The service's …Create for a document whose object does not exist yet."""
    name, group = doc.metadata.name, doc.metadata.group
    if isinstance(doc, ModelDocument):
        if doc.spec.source is None:
            raise InvalidSpec("spec.source: required to register a new model", hint="give hf:org/name or a folder")
        return _validated(
            ModelCreate,
            name=name,
            group=group,
            source=doc.spec.source,
            description=doc.spec.description or "",
            recommendations=doc.spec.deployments or [],
        )
    if isinstance(doc, DeploymentDocument):
        s = doc.spec
        model, _, model_version = s.model.partition(":")
        image, _, image_version = (s.image or "").partition(":")
        return _validated(
            DeploymentCreate,
            name=name,
            group=group,
            model=model,
            model_version=int(model_version) if model_version.isdigit() else model_version or None,
            image=image or None,
            image_version=image_version or None,
            **({"pool": s.pool} if s.pool else {}),
            replicas=s.replicas if s.replicas is not None else 1,
            autoscale=s.autoscale,
            resources=s.resources or Resources(),
            runtime_args=s.runtime_args or [],
            max_tokens_cap=s.max_tokens_cap,
            n_cap=s.n_cap,
        )
    if isinstance(doc, ImageDocument):
        stated = doc.spec.model_dump(exclude_none=True)
        return _validated(ImageCreate, name=name, **stated)
    if isinstance(doc, PoolDocument):
        return _validated(PoolSettings, name=name, **doc.spec.model_dump(exclude_none=True))
    return _validated(ApiKeyCreate, name=name, **doc.spec.model_dump(exclude_none=True))


def _refusal(doc: AnyDocument, changes: list[Change]) -> str:
    fixed = "; ".join(f"{c.path} {c.before!r} → {c.after!r}" for c in changes)
    return f"{identity(doc)}: fixed once created, so not changed: {fixed}. To change it, {HOW_TO_CHANGE[doc.kind]}"


def plan(ctx: Context, docs: list[AnyDocument]) -> list[_Step]:
    """What applying ``docs`` would do, document by document; InvalidSpec naming every document that cannot be
    applied (an immutable field changed, a recommendation that cannot be met), before anything is done."""
    if any(isinstance(d, PoolDocument) for d in docs):
        check_admin(ctx.actor, doing="configure pools")  # Forbidden for the whole apply, as it is for one pool
    steps: list[_Step] = []
    problems: list[str] = []
    fields: list[dict[str, str]] = []
    batch = ordered(docs)
    for doc in batch:
        name = f"{doc.metadata.name}:{doc.spec.version}" if isinstance(doc, ImageDocument) else doc.metadata.name
        try:
            now = current(db=ctx.db, actor=ctx.actor, kind=doc.kind, name=name)
            wanted = _resolved(ctx, batch, doc, now)
            changes = diff(now, wanted)
            if now is None:
                steps.append(_Step(wanted, None, changes, "created", _creation(wanted)))
                continue
            if isinstance(doc, KeyDocument) and _revoked(ctx, name):
                raise Conflict(f"key {name!r} was revoked", hint="apply a key of another name")
            fixed = refused(doc.kind, changes)
            detected = _detected(ctx, doc, changes)
            if detected:
                problems.append(_detected_refusal(doc, detected))
                fields += [{"document": identity(doc), "path": c.path, "message": "detected"} for c in detected]
            if fixed:
                problems.append(_refusal(doc, fixed))
                fields += [{"document": identity(doc), "path": c.path, "message": "fixed once created"} for c in fixed]
                continue
            if detected:
                continue
            steps.append(_Step(wanted, now, changes, "updated" if changes else "unchanged"))
        except (InvalidSpec, NotFound, Conflict, Forbidden) as exc:
            problems.append(f"{identity(doc)}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
            fields += [{"document": identity(doc), **f} for f in exc.fields]
    if problems:
        raise InvalidSpec(
            "nothing was applied:\n" + "\n".join(problems),
            hint="fix the documents named (`cove diff -f FILE` shows what would change)",
            fields=fields,
        )
    return steps


def _detected(ctx: Context, doc: AnyDocument, changes: list[Change]) -> list[Change]:
    """The changes to the capacity of a pool whose backend detects it (which keeps what it finds)."""
    if not isinstance(doc, PoolDocument) or not any(c.path in DETECTED for c in changes):
        return []
    if not pools.get_pool(db=ctx.db, name=doc.metadata.name).detected:
        return []
    return [c for c in changes if c.path in DETECTED]


def _detected_refusal(doc: AnyDocument, changes: list[Change]) -> str:
    differing = "; ".join(f"{c.path} {c.before!r} → {c.after!r}" for c in changes)
    return (
        f"{identity(doc)}: its backend detects its capacity, so not changed: {differing}. Leave these fields out "
        "(or state them as `cove get pool NAME -o yaml` shows them)"
    )


def _revoked(ctx: Context, name: str) -> bool:
    return any(k.name == name and k.revoked_at is not None for k in keys.list_keys(db=ctx.db, actor=ctx.actor))


# ------------------------------------------------------------------------------------------------ acting


def _do(ctx: Context, step: _Step) -> str | None:
    """Carry out one planned step; returns a new key's secret."""
    doc, db, actor = step.doc, ctx.db, ctx.actor
    if step.action == "created":
        if isinstance(doc, ModelDocument):
            models.add_model(db=db, actor=actor, data=step.create, cache_dir=ctx.cache_dir)
        elif isinstance(doc, DeploymentDocument):
            deployments.create_deployment(db=db, actor=actor, data=step.create)
        elif isinstance(doc, ImageDocument):
            images.add_image(db=db, actor=actor, data=step.create, registry=ctx.registry)
        elif isinstance(doc, PoolDocument):
            pools.apply_pool(db=db, actor=actor, spec=step.create)
        else:
            return keys.create_key(db=db, actor=actor, data=step.create).key
        return None
    changed = {c.path.split(".")[1] for c in step.changes}
    if isinstance(doc, PoolDocument):
        stated = doc.spec.model_dump(exclude_none=True)
        pools.apply_pool(db=db, actor=actor, spec=PoolSettings(name=doc.metadata.name, **stated))
    if isinstance(doc, ModelDocument):
        models.update_model(
            db=db,
            actor=actor,
            name=doc.metadata.name,
            description=doc.spec.description if "description" in changed else None,
            recommendations=doc.spec.deployments if "deployments" in changed else None,
        )
    elif isinstance(doc, DeploymentDocument):
        name = doc.metadata.name
        if "autoscale" in changed:
            deployments.set_autoscale(db=db, actor=actor, name=name, autoscale=doc.spec.autoscale)
        if doc.spec.replicas is not None and ("replicas" in changed or "autoscale" in changed):
            deployments.scale_deployment(db=db, actor=actor, name=name, replicas=doc.spec.replicas)
        if {"max_tokens_cap", "n_cap"} & changed:  # a cap left out keeps its value
            have = step.now.spec if isinstance(step.now, DeploymentDocument) else None
            deployments.set_caps(
                db=db, actor=actor, name=name,
                max_tokens_cap=doc.spec.max_tokens_cap or (have.max_tokens_cap if have else None),
                n_cap=doc.spec.n_cap or (have.n_cap if have else None),
            )  # fmt: skip
    return None


def apply(ctx: Context, docs: list[AnyDocument], *, dry_run: bool = False) -> list[Result]:
    """Make ``docs`` so (or, with ``dry_run``, say what that would do), in dependency order. Nothing is done
    unless every document can be applied (``plan``); a service's refusal while acting (a pool without room)
    stops there, and applying again carries on from what was done."""
    outcomes = []
    for step in plan(ctx, docs):
        secret = None if dry_run or step.action == "unchanged" else _do(ctx, step)
        named = identity(step.doc).split(" ", 1)[1]
        outcomes.append(Result(kind=step.doc.kind, name=named, action=step.action, changes=step.changes, secret=secret))
    return outcomes


def delete(ctx: Context, docs: list[AnyDocument]) -> list[Result]:
    """Remove what ``docs`` name, dependents first: deployments (stopped by the controller), keys (revoked),
    models (refused while a deployment uses one). Images and pools stay ("kept"): Cove does not remove registered
    images, nor pools by a document. A document whose object is not there is "absent"; one that cannot be removed
    is "refused", with why."""
    outcomes = []
    for doc in ordered(docs, reverse=True):
        name = doc.metadata.name
        try:
            if isinstance(doc, DeploymentDocument):
                deployments.delete_deployment(db=ctx.db, actor=ctx.actor, name=name)
            elif isinstance(doc, KeyDocument):
                keys.revoke_key(db=ctx.db, actor=ctx.actor, name=name)
            elif isinstance(doc, ModelDocument):
                models.delete_model(db=ctx.db, actor=ctx.actor, name=name)
            elif isinstance(doc, PoolDocument):
                kept = "pools are kept: deployments and notebook servers may use them"
                outcomes.append(Result(kind=doc.kind, name=name, action="kept", message=kept))
                continue
            else:
                kept = "registered images are kept: deployments may use them"
                named = f"{name}:{doc.spec.version}"
                outcomes.append(Result(kind=doc.kind, name=named, action="kept", message=kept))
                continue
        except NotFound:
            outcomes.append(Result(kind=doc.kind, name=name, action="absent"))
            continue
        except (Conflict, Forbidden) as exc:
            outcomes.append(Result(kind=doc.kind, name=name, action="refused", message=str(exc)))
            continue
        outcomes.append(Result(kind=doc.kind, name=name, action="deleted"))
    return outcomes


__all__ = ["Context", "CoveError", "Result", "apply", "current", "delete", "listed", "plan"]
