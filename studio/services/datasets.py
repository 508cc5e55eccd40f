"""Datasets: versions of chat data in the dataset store (``studio.datastore``), validated as they are added, with
previews and token lengths against a base model's chat template. Owned like every other object."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from studio import access, datastore, renderer
from studio.chats import DEFAULT_COLUMNS, ColumnMap, Format
from studio.db import Database
from studio.errors import Conflict, CoveError, InvalidSpec, NotFound
from studio.models import (
    Dataset,
    DatasetAdded,
    DatasetCreate,
    DatasetLengths,
    DatasetPreview,
    DatasetPublic,
    DatasetVersion,
    DatasetVersionPublic,
    FineTune,
    PreviewRow,
)
from studio.modelstore import human_size
from studio.services import models, owned
from studio.services.events import NewEvent, add_events
from studio.settings import Settings
from studio.values import Principal

KIND = "dataset"
GIB = 1024**3
PREVIEW_MAX = 200


@dataclass(frozen=True)
class Upload:
    """A file received into the store's incoming folder (``datastore.receive``), under the name it was sent as."""

    path: Path
    filename: str


def _described(dataset: Dataset, versions: Sequence[DatasetVersion]) -> DatasetPublic:
    return DatasetPublic(
        name=dataset.name,
        description=dataset.description,
        owner=dataset.owner,
        group=dataset.group,
        created_at=dataset.created_at,
        versions=[DatasetVersionPublic.model_validate(v) for v in versions],
    )


def _public(session: Session, dataset: Dataset) -> DatasetPublic:
    versions = session.exec(
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id).order_by(col(DatasetVersion.version))
    ).all()
    return _described(dataset, versions)


def _find(session: Session, name: str, actor: Principal) -> Dataset:
    row = session.exec(select(Dataset).where(Dataset.name == name)).first()
    if row is None:
        raise NotFound(f"no dataset named {name!r}", hint="see `cove dataset list`, or add it: `cove dataset add`")
    owned.check(actor, row, kind=KIND)
    return row


def _version(session: Session, dataset: Dataset, version: int | None) -> DatasetVersion:
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    query = (
        query.where(DatasetVersion.version == version)
        if version is not None
        else query.order_by(col(DatasetVersion.version).desc())
    )
    found = session.exec(query).first()
    if found is None:
        raise NotFound(
            f"dataset {dataset.name!r} has no version {version}", hint=f"see `cove dataset show {dataset.name}`"
        )
    return found


def find_version(session: Session, *, dataset: str, version: int | None, actor: Principal) -> DatasetVersion:
    """A dataset's version (newest when ``version`` is None) that ``actor`` may use, in the caller's transaction."""
    return _version(session, _find(session, dataset, actor), version)


def _quota_left(session: Session, owner: str, settings: Settings) -> int:
    """Bytes the owner may still add: the quota less their versions' folders (each folder counted once)."""
    held = session.exec(
        select(DatasetVersion.sha256, DatasetVersion.size_bytes)
        .join(Dataset, col(Dataset.id) == DatasetVersion.dataset_id)
        .where(Dataset.owner == owner)
    ).all()
    return int(settings.dataset_quota_gib * GIB) - sum(dict(held).values())


def add_dataset(
    *,
    db: Database,
    actor: Principal,
    data: DatasetCreate,
    settings: Settings,
    upload: Upload | None = None,
    progress: Callable[[str], None] | None = None,
) -> DatasetAdded:
    """Register ``data.source`` (or ``upload``) as a new dataset, or with ``new_version`` as the next version of
    one. The files are stored content-addressed and validated row by row; the same content as the newest version
    makes no version (``unchanged``). A file or folder on the server is for admins. Raises Conflict for a taken
    name, InvalidSpec for unreadable files or a column map that does not fit, QuotaExceeded for too little
    quota or disk, NotFound / SourceUnavailable for a Hub repo that cannot be had."""
    say = progress or (lambda _text: None)
    try:
        access.check_group(actor, data.group)
        with db.session() as session:
            exists = session.exec(select(Dataset).where(Dataset.name == data.name)).first()
            if exists and not data.new_version:
                raise Conflict(
                    f"dataset {data.name!r} exists", hint="add a version with --new-version, or pick another name"
                )
            if exists:
                owned.check(actor, exists, kind=KIND)
            owner = exists.owner if exists else actor.name
            quota_left = _quota_left(session, owner, settings)
        if upload is not None:
            source = datastore.Source("upload", Path(upload.filename).name)
            files = [(datastore.split_of(Path(source.ref)) or "train", upload.path)]
        else:
            source = datastore.parse_source(data.source)
            if source.kind == "folder":
                access.check_admin(actor, doing="register a dataset from a file or folder on the server")
                files = datastore.data_files(Path(source.ref))
            else:
                say(f"resolving {source.ref}{'@' + (source.revision or 'main')} (Hugging Face Hub or cache)")
                folder, revision = datastore.fetch_from_hub(source.ref, settings.models_dir, revision=source.revision)
                source = datastore.Source("hf", source.ref, revision)
                files = datastore.data_files(folder)
        size = human_size(sum(p.stat().st_size for _, p in files))
        say(f"storing {len(files)} file{'s' if len(files) != 1 else ''} ({size})")
        stored = datastore.store(
            files, settings.datasets_dir, quota_left=quota_left, owner=owner, move=upload is not None
        )
    finally:
        if upload is not None:
            datastore.discard(upload.path)
    return _register(db=db, actor=actor, data=data, settings=settings, source=source, stored=stored, say=say)


def _register(
    *,
    db: Database,
    actor: Principal,
    data: DatasetCreate,
    settings: Settings,
    source: datastore.Source,
    stored: datastore.Stored,
    say: Callable[[str], None],
) -> DatasetAdded:
    with db.session() as session:
        dataset = session.exec(select(Dataset).where(Dataset.name == data.name)).first()
        if dataset is not None:
            latest = _version(session, dataset, None)
            same_map = data.format in (None, latest.format) and (not data.columns or data.columns == latest.columns)
            if latest.sha256 == stored.sha256 and same_map:
                return DatasetAdded(dataset=_public(session, dataset), version=latest.version, unchanged=True)
    say("validating rows")
    try:
        checked = datastore.check(stored.path, stored.files, stored.builder, fmt=data.format, columns=data.columns)
    except CoveError:
        if not stored.reused:
            datastore.remove(settings.datasets_dir, stored.sha256)
        raise
    with db.session() as session:
        dataset = session.exec(select(Dataset).where(Dataset.name == data.name)).first()
        if dataset is None:
            dataset = Dataset(name=data.name, description=data.description, owner=actor.name, group=data.group)
            session.add(dataset)
            try:
                session.flush()
            except sa.exc.IntegrityError as exc:
                raise Conflict(f"dataset {data.name!r} exists", hint="pick another name") from exc
        assert dataset.id is not None
        latest_number = session.exec(
            select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
        ).one()
        number = (latest_number or 0) + 1
        session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=number,
                sha256=stored.sha256,
                source_kind=source.kind,
                source=source.ref,
                revision=source.revision,
                path=str(stored.path),
                builder=stored.builder,
                files=stored.files,
                splits=checked.splits,
                rows=sum(checked.splits.values()),
                size_bytes=stored.size_bytes,
                format=checked.columns.format.value,
                columns={p: checked.columns.column(p) for p in _parts(checked.columns)},
                report=checked.report,
            )
        )
        said = "; ".join(s["summary"] for s in checked.report["splits"].values())
        text = f"version {number} from {source.ref}{'@' + source.revision if source.revision else ''}: {said}"
        add_events(session, kind=KIND, name=data.name, actor=actor.name, events=[NewEvent("VersionAdded", text)])
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(
                f"another version of {data.name!r} was added at the same moment", hint="run the command again"
            ) from exc
        return DatasetAdded(dataset=_public(session, dataset), version=number, unchanged=False)


def _parts(columns: ColumnMap) -> list[str]:
    return list(DEFAULT_COLUMNS[columns.format])


def list_datasets(*, db: Database, actor: Principal) -> list[DatasetPublic]:
    """The datasets ``actor`` may see, by name, with their versions: two queries."""
    with db.session() as session:
        found = session.exec(select(Dataset).where(owned.visible(Dataset, actor)).order_by(col(Dataset.name))).all()
        ids = [d.id for d in found]
        versions = session.exec(
            select(DatasetVersion)
            .where(col(DatasetVersion.dataset_id).in_(ids))
            .order_by(col(DatasetVersion.dataset_id), col(DatasetVersion.version))
        ).all()
        by_dataset = {k: list(g) for k, g in itertools.groupby(versions, key=lambda v: v.dataset_id)}
        return [_described(d, by_dataset.get(d.id or 0, [])) for d in found]


def get_dataset(*, db: Database, actor: Principal, name: str) -> DatasetPublic:
    with db.session() as session:
        return _public(session, _find(session, name, actor))


def _files_of(version: DatasetVersion) -> tuple[Path, dict[str, list[str]]]:
    root = Path(version.path)
    if not root.is_dir():
        raise NotFound(
            f"the files of version {version.version} are missing from the dataset store ({root})",
            hint="add the dataset again",
        )
    return root, version.files


def _split(version: DatasetVersion, split: str) -> str:
    if split not in version.files:
        raise NotFound(
            f"version {version.version} has no {split} split", hint=f"its splits: {', '.join(version.files)}"
        )
    return split


def preview(
    *,
    db: Database,
    actor: Principal,
    name: str,
    version: int | None = None,
    split: str = "train",
    rows: int = 5,
    model: str | None = None,
    model_version: int | None = None,
    max_length: int = 1024,
) -> DatasetPreview:
    """The first ``rows`` rows of ``split``: raw, as messages (or the problem), and with a base ``model`` the
    rendered text in segments, what is trained on marked."""
    with db.session() as session:
        dataset = _find(session, name, actor)
        found = _version(session, dataset, version)
        base = models.find_version(session, model=model, version=model_version) if model else None
    root, files = _files_of(found)
    columns = ColumnMap(format=Format(found.format), columns=found.columns)
    chat = renderer.ChatRenderer(Path(base.path)) if base else None
    shown = []
    for line, raw, messages, problem in itertools.islice(
        datastore.normalized(root, files, found.builder, columns, split=_split(found, split)),
        max(1, min(rows, PREVIEW_MAX)),
    ):
        segments = renderer.trained_preview(chat, messages, max_length=max_length) if chat and messages else None
        shown.append(PreviewRow(line=line, raw=raw, messages=messages, problem=problem, segments=segments))
    return DatasetPreview(
        dataset=name, version=found.version, split=split, format=found.format, columns=found.columns, rows=shown
    )


def lengths(
    *,
    db: Database,
    actor: Principal,
    name: str,
    model: str,
    version: int | None = None,
    model_version: int | None = None,
    max_length: int = 1024,
    split: str = "train",
    bins: int = 20,
) -> DatasetLengths:
    """Token lengths of ``split`` rendered with ``model``'s chat template: percentiles, a histogram, and how many
    rows ``max_length`` would truncate, leave without trainable tokens, or that are dropped as unfit. InvalidSpec
    when the model's tokenizer has no chat template (saying how to give one)."""
    if max_length < 1:
        raise InvalidSpec(f"max_length {max_length} is not a length", hint="give a number of tokens, e.g. 1024")
    with db.session() as session:
        dataset = _find(session, name, actor)
        found = _version(session, dataset, version)
        base = models.find_version(session, model=model, version=model_version)
    root, files = _files_of(found)
    chat = renderer.ChatRenderer(Path(base.path))
    columns = ColumnMap(format=Format(found.format), columns=found.columns)
    stats = renderer.measure(
        chat, root, files, found.builder, columns, max_length=max_length, split=_split(found, split), bins=bins
    )
    return DatasetLengths(
        dataset=name, version=found.version, split=split, model=model, model_version=base.version, stats=stats
    )


def delete_dataset(*, db: Database, actor: Principal, name: str, settings: Settings) -> None:
    """Remove a dataset and its versions; their files go unless another version shares them. Refused while a
    fine-tune uses one of its versions (naming them)."""
    with db.session() as session:
        dataset = _find(session, name, actor)
        versions = session.exec(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)).all()
        ids = [v.id for v in versions]
        used = session.exec(select(FineTune.name).where(col(FineTune.dataset_version_id).in_(ids))).all()
        if used:
            raise Conflict(
                f"dataset {name!r} is used by fine-tune{'s' if len(used) > 1 else ''} {', '.join(sorted(used))}",
                hint="delete those fine-tunes first",
            )
        shas = {v.sha256 for v in versions}
        session.delete(dataset)
        add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("Deleted", "removed")])
        session.flush()
        shared = set(session.exec(select(DatasetVersion.sha256).where(col(DatasetVersion.sha256).in_(shas))).all())
        session.commit()
    for sha in shas - shared:
        datastore.remove(settings.datasets_dir, sha)
