"""The model catalog: models, their versions, and where each version's files are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from studio import access
from studio.db import Database
from studio.errors import Conflict, InvalidSpec, NotFound
from studio.models import AliasMove, Deployment, Model, ModelCreate, ModelPublic, ModelVersion, ModelVersionPublic
from studio.modelstore import fetch_from_hub, import_folder, inspect_folder
from studio.names import is_repo_id
from studio.services import owned
from studio.services.events import NewEvent, add_events
from studio.specs import Recommendation
from studio.values import Principal, SourceKind

KIND = "model"


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    ref: str  # repo id or absolute folder
    revision: str | None = None


def parse_source(source: str) -> Source:
    """``hf:org/name[@rev]`` and ``org/name[@rev]`` are Hub repos; anything that is a folder is local."""
    text = source.strip()
    if text.startswith("hf:"):
        repo, _, revision = text[3:].partition("@")
        if not is_repo_id(repo):
            raise InvalidSpec(f"{repo!r} is not a Hugging Face repo id", hint="write it as org/name")
        return Source(SourceKind.HF, repo, revision or None)
    path = Path(text).expanduser()
    if path.exists() or text.startswith(("/", ".", "~")):
        return Source(SourceKind.LOCAL, str(path.resolve()))
    repo, _, revision = text.partition("@")
    if is_repo_id(repo):
        return Source(SourceKind.HF, repo, revision or None)
    raise InvalidSpec(
        f"{source!r} is neither a folder nor a Hugging Face repo id",
        hint="give a path to a model folder, or hf:org/name",
    )


ALIASES = ("production", "staging")


def _public(session: Session, model: Model) -> ModelPublic:
    versions = session.exec(
        select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(col(ModelVersion.version))
    ).all()
    return _described(model, versions, _bases(session, versions), alias_versions(session).get(model.id or 0, {}))


def alias_versions(session: Session) -> dict[int, dict[str, int]]:
    """Model id → alias → the version number it points at now (the newest move of each alias wins)."""
    rows = session.exec(
        select(AliasMove.model_id, AliasMove.alias, ModelVersion.version)
        .join(ModelVersion, col(AliasMove.version_id) == ModelVersion.id)
        .order_by(col(AliasMove.id))
    ).all()
    found: dict[int, dict[str, int]] = {}
    for model_id, alias, version in rows:
        found.setdefault(model_id, {})[alias] = version
    return found


def alias_version(session: Session, *, model: str, alias: str) -> ModelVersion:
    """The version row ``alias`` of ``model`` points at; InvalidSpec for an unknown alias, NotFound when unset."""
    if alias not in ALIASES:
        raise InvalidSpec(f"{alias!r} is not an alias: a model has {' and '.join(ALIASES)}", hint="name one of them")
    row = session.exec(select(Model).where(Model.name == model)).first()
    if row is None:
        raise NotFound(f"no model named {model!r}", hint="see `cove model list`")
    found = session.exec(
        select(ModelVersion)
        .join(AliasMove, col(AliasMove.version_id) == ModelVersion.id)
        .where(AliasMove.model_id == row.id, AliasMove.alias == alias)
        .order_by(col(AliasMove.id).desc())
    ).first()
    if found is None:
        nxt = "promote a version: `cove model promote" if alias == "production" else "set it: `cove model alias"
        raise NotFound(f"model {model!r} has no {alias} version yet", hint=f"{nxt} {model} VERSION`")
    return found


def _bases(session: Session, versions: Sequence[ModelVersion]) -> dict[int, str]:
    """ "model@version" of each base an adapter version among ``versions`` is served on (one query, or none)."""
    ids = {v.adapter_of_id for v in versions if v.adapter_of_id is not None}
    if not ids:
        return {}
    rows = session.exec(
        select(ModelVersion.id, Model.name, ModelVersion.version)
        .join(Model, col(ModelVersion.model_id) == Model.id)
        .where(col(ModelVersion.id).in_(ids))
    ).all()
    return {id_: f"{name}@{version}" for id_, name, version in rows if id_ is not None}


def _described(
    model: Model, versions: Sequence[ModelVersion], bases: dict[int, str], aliases: dict[str, int]
) -> ModelPublic:
    return ModelPublic(
        name=model.name,
        description=model.description,
        owner=model.owner,
        group=model.group,
        created_at=model.created_at,
        versions=[
            ModelVersionPublic.model_validate(v.model_dump() | {"adapter_of": bases.get(v.adapter_of_id or 0)})
            for v in versions
        ],
        recommendations=[Recommendation.model_validate(r) for r in model.recommendations or []],
        aliases=aliases,
        gate=model.gate,
        # a mark on a version production has moved away from says nothing about production now
        gate_failing=model.gate_failing
        if model.gate_failing and model.gate_failing.version == aliases.get("production")
        else None,
    )


def add_model(
    *,
    db: Database,
    actor: Principal,
    data: ModelCreate,
    cache_dir: Path,
    progress: Callable[[str], None] | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> ModelPublic:
    """Register ``data.source`` as a new model (or, with ``new_version``, a new version of one).

    Hub repos are resolved into the model cache first (downloading what is missing); folders are checked in
    place. The model is ``actor``'s; a new version of someone else's is refused. Folders on the server are for
    admins (a member's model comes from the Hub). Raises Conflict for a taken name, InvalidSpec for a corrupt
    folder, SourceUnavailable when offline.
    """
    access.check_group(actor, data.group)
    with db.session() as session:
        exists = session.exec(select(Model).where(Model.name == data.name)).first()
    if exists and not data.new_version:
        raise Conflict(f"model {data.name!r} exists", hint="add a version with --new-version, or pick another name")
    if exists:
        owned.check(actor, exists, kind=KIND)
    source = parse_source(data.source)
    if source.kind == SourceKind.LOCAL:
        access.check_admin(actor, doing="register a model from a folder on the server")
    if source.kind == SourceKind.HF:
        snapshot = fetch_from_hub(source.ref, cache_dir, revision=source.revision, progress=progress, on_bytes=on_bytes)
        folder, revision = snapshot.path, snapshot.revision
    else:
        folder, revision = Path(source.ref), None
    info = inspect_folder(folder)
    with db.session() as session:
        model = session.exec(select(Model).where(Model.name == data.name)).first()
        if model is None:
            model = Model(
                name=data.name,
                description=data.description,
                owner=actor.name,
                group=data.group,
                recommendations=_stored(data.recommendations),
            )
            session.add(model)
            try:
                session.flush()
            except sa.exc.IntegrityError as exc:
                raise Conflict(f"model {data.name!r} exists", hint="pick another name") from exc
        assert model.id is not None
        latest = session.exec(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)).one()
        session.add(
            ModelVersion(
                model_id=model.id,
                version=(latest or 0) + 1,
                source_kind=source.kind,
                source=source.ref,
                revision=revision,
                path=str(folder),
                size_bytes=info.size_bytes,
                architecture=info.architecture,
                model_type=info.model_type,
            )
        )
        text = f"version {(latest or 0) + 1} from {data.source}"
        add_events(session, kind=KIND, name=data.name, actor=actor.name, events=[NewEvent("VersionAdded", text)])
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(
                f"another version of {data.name!r} was added at the same moment", hint="run the command again"
            ) from exc
        return _public(session, model)


def _stored(recommendations: Sequence[Recommendation]) -> list[dict[str, object]]:
    return [r.model_dump(mode="json", by_alias=True) for r in recommendations]


def update_model(
    *,
    db: Database,
    actor: Principal,
    name: str,
    description: str | None = None,
    recommendations: Sequence[Recommendation] | None = None,
) -> ModelPublic:
    """Change what describes a model (its versions' files are fixed): its description, its recommended
    deployments. None leaves a field as it is."""
    with db.session() as session:
        model = session.exec(select(Model).where(Model.name == name)).first()
        if model is None:
            raise NotFound(f"no model named {name!r}", hint="see `cove model list`")
        owned.check(actor, model, kind=KIND)
        said = []
        if description is not None and description != model.description:
            model.description = description
            said.append("description")
        if recommendations is not None and _stored(recommendations) != model.recommendations:
            model.recommendations = _stored(recommendations)
            runtimes = ", ".join(r.runtime.value for r in recommendations) or "none"
            said.append(f"recommended deployments ({runtimes})")
        if said:
            session.add(model)
            changed = [NewEvent("Updated", "changed its " + " and ".join(said))]
            add_events(session, kind=KIND, name=name, actor=actor.name, events=changed)
            session.commit()
        return _public(session, model)


def register_built(
    *,
    db: Database,
    actor: Principal,
    name: str,
    folder: Path,
    repo_id: str,
    cache_dir: Path,
    description: str = "",
    lineage: dict[str, Any] | None = None,
) -> ModelPublic:
    """Store a folder Cove built (demo model, fine-tune output) in the cache as ``repo_id`` and register it as
    ``actor``'s, as a new model or the next version of ``name``; ``lineage`` says where it came from."""
    snapshot = import_folder(folder, repo_id, cache_dir)
    model = add_model(
        db=db,
        actor=actor,
        cache_dir=cache_dir,
        data=ModelCreate(
            name=name, source=f"hf:{repo_id}@{snapshot.revision}", description=description, new_version=True
        ),
    )
    if lineage is not None:
        with db.session() as session:
            version = find_version(session, model=name, version=model.latest.version)
            version.lineage = lineage
            session.add(version)
            session.commit()
        model = get_model(db=db, name=name)
    return model


def register_adapter(
    *,
    db: Database,
    actor: Principal,
    name: str,
    folder: Path,
    repo_id: str,
    cache_dir: Path,
    base_version_id: int,
    description: str = "",
    lineage: dict[str, Any] | None = None,
) -> ModelPublic:
    """Store a LoRA adapter Cove trained in the cache as ``repo_id`` and register it as the next version of
    ``name`` (``actor``'s, made if new), served on the model version ``base_version_id``. Raises InvalidSpec when
    ``folder`` is not an adapter."""
    if not (folder / "adapter_config.json").is_file() or not any(folder.glob("adapter_model.*")):
        raise InvalidSpec(
            f"{folder} is not a LoRA adapter: it needs adapter_config.json and adapter_model.safetensors",
            hint="fine-tune again; the trainer saves both",
        )
    snapshot = import_folder(folder, repo_id, cache_dir)
    with db.session() as session:
        base = session.get(ModelVersion, base_version_id)
        if base is None:
            raise NotFound(f"the base version of adapter {repo_id} is gone", hint="register the adapter's base again")
        model = session.exec(select(Model).where(Model.name == name)).first()
        if model is None:
            model = Model(name=name, description=description, owner=actor.name)
            session.add(model)
            session.flush()
        else:
            owned.check(actor, model, kind=KIND)
        assert model.id is not None
        latest = session.exec(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)).one()
        session.add(
            ModelVersion(
                model_id=model.id,
                version=(latest or 0) + 1,
                source_kind=SourceKind.HF,
                source=repo_id,
                revision=snapshot.revision,
                path=str(snapshot.path),
                size_bytes=sum(p.stat().st_size for p in snapshot.path.iterdir() if p.is_file()),
                architecture=base.architecture,
                model_type="lora",
                lineage=lineage,
                adapter_of_id=base.id,
            )
        )
        text = f"version {(latest or 0) + 1}: a LoRA adapter on version {base.version}"
        add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("VersionAdded", text)])
        session.commit()
        return _public(session, model)


def list_models(*, db: Database) -> list[ModelPublic]:
    """Every model with its versions, by name: two queries, whatever their number."""
    with db.session() as session:
        versions: dict[int, list[ModelVersion]] = {}
        for v in session.exec(select(ModelVersion).order_by(col(ModelVersion.model_id), col(ModelVersion.version))):
            versions.setdefault(v.model_id, []).append(v)
        models = session.exec(select(Model).order_by(col(Model.name))).all()
        bases = _bases(session, [v for found in versions.values() for v in found])
        aliases = alias_versions(session)
        return [_described(m, versions.get(m.id or 0, []), bases, aliases.get(m.id or 0, {})) for m in models]


def get_model(*, db: Database, name: str) -> ModelPublic:
    with db.session() as session:
        model = session.exec(select(Model).where(Model.name == name)).first()
        if model is None:
            raise NotFound(f"no model named {name!r}", hint="see `cove model list`")
        return _public(session, model)


def find_version(session: Session, *, model: str, version: int | None) -> ModelVersion:
    """The version row (newest when ``version`` is None), inside the caller's transaction."""
    row = session.exec(select(Model).where(Model.name == model)).first()
    if row is None:
        raise NotFound(f"no model named {model!r}", hint="add it with `cove model add NAME SOURCE`")
    query = select(ModelVersion).where(ModelVersion.model_id == row.id)
    query = (
        query.where(ModelVersion.version == version)
        if version is not None
        else query.order_by(col(ModelVersion.version).desc())
    )
    found = session.exec(query).first()
    if found is None:
        raise NotFound(f"model {model!r} has no version {version}", hint="see `cove model list`")
    return found


def delete_model(*, db: Database, actor: Principal, name: str) -> None:
    """Remove a model and its versions from the catalog (files in the cache stay). Refused while deployed."""
    with db.session() as session:
        model = session.exec(select(Model).where(Model.name == name)).first()
        if model is None:
            raise NotFound(f"no model named {name!r}", hint="see `cove model list`")
        owned.check(actor, model, kind=KIND)
        used = session.exec(
            select(Deployment.name)
            .join(ModelVersion, col(Deployment.model_version_id) == ModelVersion.id)
            .where(ModelVersion.model_id == model.id)
        ).all()
        if used:
            raise Conflict(f"model {name!r} is deployed as {', '.join(used)}", hint="delete those deployments first")
        session.delete(model)
        deleted = [NewEvent("Deleted", "removed from the catalog")]
        add_events(session, kind=KIND, name=name, actor=actor.name, events=deleted)
        session.commit()
