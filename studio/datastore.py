"""The dataset store: a dataset version's files, content-addressed, under ``COVE_HOME/datasets/<sha256>/``.

A version's files come from an uploaded file, a file or folder the server reads, or a Hugging Face dataset repo
(``hf:org/name[@revision]``, pinned to the commit it resolved to). Each file goes to a split by its name (train*
→ train; eval*, validation*, val*, test* → eval; a lone file → train) and is stored as ``<sha256>/<split>/<file>``,
where the sha256 is over every file's split, name and bytes: the same content is stored once, whoever adds it.
Files are copied into a hidden folder first and renamed into place, so a crash leaves nothing half-made. Before
copying, the free disk space and the owner's quota are checked.

Rows are read one at a time: JSONL line by line (``studio.chats.jsonl_rows``: a line that is not JSON is a
problem on its line), CSV with the standard library's reader, JSON arrays and Parquet through ``datasets`` in
streaming mode (Arrow batches), never a whole file in memory. ``check`` validates a version
(``studio.chats.Checker``); ``studio.renderer`` counts its rows' tokens with a base model's chat template.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import re
import shutil
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.chats import (
    DEFAULT_COLUMNS,
    OPTIONAL,
    Checker,
    ColumnMap,
    Format,
    detect,
    jsonl_rows,
)
from studio.errors import InvalidSpec, NotFound, QuotaExceeded, SourceUnavailable
from studio.modelstore import human_size
from studio.names import is_repo_id

SUFFIXES = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SPLITS = ("train", "eval")
_EVAL = re.compile(r"^(eval|validation|valid|val|dev|test)([^a-z]|$)")
_TRAIN = re.compile(r"^train([^a-z]|$)")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
INCOMING = ".incoming"  # hidden folders being filled; renamed to <sha256> when complete
HEADROOM = 64 * 1024 * 1024  # left free on the disk beyond a version's size
PROBLEMS_KEPT = 20


@dataclass(frozen=True)
class Source:
    kind: str  # upload | folder | hf
    ref: str  # the file's name, the absolute path, or the repo id
    revision: str | None = None


def parse_source(text: str) -> Source:
    """``hf:org/name[@revision]`` is a Hub dataset repo; anything else is a file or folder on the server."""
    given = text.strip()
    if given.startswith("hf:"):
        repo, _, revision = given[3:].partition("@")
        if not is_repo_id(repo):
            raise InvalidSpec(f"{repo!r} is not a Hugging Face dataset repo id", hint="write it as hf:org/name")
        return Source("hf", repo, revision or None)
    path = Path(given).expanduser()
    if not path.exists():
        raise NotFound(
            f"no file or folder at {given!r} on the server",
            hint="give a path the server can read, hf:org/name for a Hub dataset, or upload the file",
        )
    return Source("folder", str(path.resolve()))


# ------------------------------------------------------------------------------------------------ files and splits


def split_of(relative: Path) -> str | None:
    """The split a file's name (or a folder it is in) names; None when it names none."""
    for part in reversed([relative.stem, *relative.parent.parts]):
        name = part.lower()
        if _TRAIN.match(name):
            return "train"
        if _EVAL.match(name):
            return "eval"
    return None


def data_files(src: Path) -> list[tuple[str, Path]]:
    """(split, file) for each data file of ``src`` (a file, or a folder searched for them), by split then name.

    Raises InvalidSpec when there are none, or when they mix builders (JSON and CSV, say)."""
    if src.is_file():
        found = [src]
        root = src.parent
    else:
        root = src
        found = sorted(
            p
            for p in src.rglob("*")
            if p.is_file()
            and p.suffix.lower() in SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(src).parts)
        )
    if not found or any(p.suffix.lower() not in SUFFIXES for p in found):
        raise InvalidSpec(
            f"{src} holds no dataset files",
            hint="give .jsonl, .json, .csv or .parquet files (train*, eval*/validation*/test* name the splits)",
        )
    builders = sorted({SUFFIXES[p.suffix.lower()] for p in found})
    if len(builders) > 1:
        raise InvalidSpec(f"{src} mixes {' and '.join(builders)} files", hint="give files of one kind")
    named = [(split_of(p.relative_to(root)), p) for p in found]
    if len(named) == 1:
        return [("train" if named[0][0] != "eval" else "eval", named[0][1])]
    if not any(split == "train" for split, _ in named):
        # several files and none named train: those not named eval are the training split
        named = [(split or "train", p) for split, p in named]
    unnamed = [p.name for split, p in named if split is None]
    if unnamed:
        raise InvalidSpec(
            f"{src} has files no split is named in: {', '.join(unnamed[:5])}",
            hint="name files train* or eval*/validation*/test*, or give one file",
        )
    return sorted(((str(s), p) for s, p in named), key=lambda sp: (SPLITS.index(sp[0]), str(sp[1])))


def builder_of(files: Iterable[Path]) -> str:
    return SUFFIXES[next(iter(files)).suffix.lower()]


def _stored_name(path: Path, taken: set[str]) -> str:
    name = path.name
    while name in taken:  # shards named alike in different folders
        name = f"{path.parent.name}-{name}"
        path = path.parent
    taken.add(name)
    return name


# ------------------------------------------------------------------------------------------------ the store


@dataclass(frozen=True)
class Stored:
    """A version's files in the store."""

    sha256: str
    path: Path  # datasets_dir / sha256
    builder: str
    files: dict[str, list[str]]  # split → paths relative to ``path``
    size_bytes: int
    reused: bool  # the same content was stored already


def check_room(target: Path, needed: int, *, quota_left: int | None, owner: str) -> None:
    """QuotaExceeded when ``needed`` bytes exceed the owner's quota left or the free disk space at ``target``."""
    if quota_left is not None and needed > quota_left:
        raise QuotaExceeded(
            f"this dataset needs {human_size(needed)} and {owner}'s dataset quota has {human_size(max(0, quota_left))}"
            " left",
            hint="delete datasets you no longer use, or ask an admin to raise COVE_DATASET_QUOTA_GIB",
        )
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free
    if needed + HEADROOM > free:
        raise QuotaExceeded(
            f"this dataset needs {human_size(needed)} (and {human_size(HEADROOM)} to spare) and the disk holding"
            f" {target} has {human_size(free)} free",
            hint="free space on that disk, or give a smaller dataset",
        )


def store(
    files: list[tuple[str, Path]],
    datasets_dir: Path,
    *,
    quota_left: int | None,
    owner: str,
    move: bool = False,
) -> Stored:
    """Copy (``move``: rename, for uploads already in the store's disk) ``files`` into the store under their
    content's sha256; the folder an identical version already has is reused. Checks room first."""
    size = sum(p.stat().st_size for _, p in files)
    check_room(datasets_dir, size, quota_left=quota_left, owner=owner)
    staging = datasets_dir / INCOMING / uuid.uuid4().hex
    digest = hashlib.sha256()
    relative: dict[str, list[str]] = {}
    taken: dict[str, set[str]] = {}
    try:
        for split, src in files:
            name = _stored_name(src, taken.setdefault(split, set()))
            target = staging / split / name
            target.parent.mkdir(parents=True, exist_ok=True)
            digest.update(f"{split}\0{name}\0".encode())
            if move:
                src.replace(target)
                _hash_into(digest, target)
            else:
                _copy_hashing(src, target, digest)
            relative.setdefault(split, []).append(f"{split}/{name}")
        sha = digest.hexdigest()
        final = datasets_dir / sha
        reused = final.is_dir()
        if not reused:
            staging.replace(final)  # atomic: the version's folder is whole or absent
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Stored(sha, final, builder_of(p for _, p in files), relative, size, reused)


def _hash_into(digest: Any, path: Path) -> None:
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def _copy_hashing(src: Path, target: Path, digest: Any) -> None:
    with src.open("rb") as fin, target.open("wb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)
            fout.write(block)


class Incoming:
    """An upload being written to a file of its own under the store's incoming folder, chunk by chunk (never held
    whole); QuotaExceeded past ``limit`` bytes, the partial file removed."""

    def __init__(self, filename: str, datasets_dir: Path, *, limit: int) -> None:
        name = Path(filename).name
        if Path(name).suffix.lower() not in SUFFIXES:
            raise InvalidSpec(
                f"{filename!r} is not a dataset file", hint="upload a .jsonl, .json, .csv or .parquet file"
            )
        self.limit, self.written = limit, 0
        folder = datasets_dir / INCOMING / f"upload-{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        self.path = folder / name
        self.file = self.path.open("wb")

    def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if self.written > self.limit:
            self.abort()
            raise QuotaExceeded(
                f"the upload is over the limit of {human_size(self.limit)}",
                hint="COVE_MAX_UPLOAD_BYTES sets it; or put the file on the server and add it by path",
            )
        self.file.write(chunk)

    def finish(self) -> Path:
        self.file.close()
        return self.path

    def abort(self) -> None:
        self.file.close()
        discard(self.path)


def receive(chunks: Iterable[bytes], filename: str, datasets_dir: Path, *, limit: int) -> Path:
    """``chunks`` written as an upload (``Incoming``); the file's path."""
    incoming = Incoming(filename, datasets_dir, limit=limit)
    try:
        for chunk in chunks:
            incoming.write(chunk)
    except BaseException:
        incoming.abort()
        raise
    return incoming.finish()


def discard(path: Path) -> None:
    """Remove an upload's incoming folder (after it was stored, or refused)."""
    shutil.rmtree(path.parent, ignore_errors=True)


def remove(datasets_dir: Path, sha256: str) -> None:
    """Remove a version's folder (its callers know no other version shares it)."""
    shutil.rmtree(datasets_dir / sha256, ignore_errors=True)


def fetch_from_hub(repo_id: str, cache_dir: Path, *, revision: str | None = None) -> tuple[Path, str]:
    """The snapshot folder of the Hub dataset ``repo_id`` and the commit it resolved to, downloading what the
    cache lacks (offline, ``HF_HUB_OFFLINE=1``, from the cache alone). NotFound, SourceUnavailable."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir))
    except GatedRepoError as exc:
        raise SourceUnavailable(
            f"{repo_id} is gated on the Hugging Face Hub", hint="accept its terms on the Hub and set HF_TOKEN"
        ) from exc
    except RevisionNotFoundError as exc:
        raise NotFound(f"{repo_id} has no revision {revision!r}", hint="check the branch, tag or commit") from exc
    except RepositoryNotFoundError as exc:
        raise NotFound(
            f"no dataset {repo_id!r} on the Hugging Face Hub", hint="check the spelling, or set HF_TOKEN"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise SourceUnavailable(
            f"{repo_id}{'@' + revision if revision else ''} is not in the local dataset cache ({cache_dir}) and the"
            " Hugging Face Hub cannot be reached",
            hint="connect this machine to the Hub, or upload the files",
        ) from exc
    except HfHubHTTPError as exc:
        raise SourceUnavailable(f"the Hugging Face Hub refused {repo_id}: {exc}", hint="retry later") from exc
    if not _COMMIT.match(path.name):
        raise SourceUnavailable(f"{repo_id} resolved to {path.name!r}, not a commit", hint="give a commit hash")
    return path, path.name


# ------------------------------------------------------------------------------------------------ reading rows


def rows_of(path: Path, builder: str) -> Generator[tuple[int, Any]]:
    """(line, row) for each row of a stored file: a JSONL line number, the line a CSV row starts on (the header is
    line 1), a JSON array's or Parquet file's record number. A JSONL line that is not JSON is yielded as its text."""
    if builder == "json" and not _is_json_array(path):
        with path.open(encoding="utf-8", errors="replace") as fh:
            yield from jsonl_rows(fh)
        return
    if builder == "csv":
        yield from _csv_rows(path)
        return
    for i, row in enumerate(_streamed(path, builder)):
        yield i + 1, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """CSV rows as text, by the line each starts on (a quoted cell may span lines). Read with the standard
    library's reader rather than ``datasets``: it streams as well, keeps exact line numbers, reads every cell as
    text (an empty cell is "", not NaN) and closes its file (``datasets``' CSV reader leaves it open)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        start = 2
        for row in reader:
            yield start, {k: v for k, v in row.items() if k is not None}
            start = reader.line_num + 1


def _is_json_array(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _streamed(path: Path, builder: str) -> Iterator[Mapping[str, Any]]:
    """Rows through ``datasets`` (streaming: Arrow batches from the file, nothing cached); InvalidSpec when it
    cannot read the file."""
    import datasets
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    try:
        streamed = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True)
        yield from streamed
    except (ValueError, TypeError, OSError, datasets.exceptions.DatasetGenerationError) as exc:
        cause = exc.__cause__ or exc
        raise InvalidSpec(
            f"{path.name} cannot be read as {builder.upper()}: {str(cause).splitlines()[0][:300]}",
            hint="check the file's format (one JSON object per line for .jsonl; a header row for .csv)",
        ) from exc


def columns_of(path: Path, builder: str) -> list[str]:
    """The columns of a file's first row (keys of the first JSON object)."""
    with contextlib.closing(rows_of(path, builder)) as rows:  # closed at once, and the file it opened with it
        for _, row in rows:
            if isinstance(row, Mapping):
                return list(row)
    return []


def column_map(present: list[str], *, fmt: str | None = None, columns: Mapping[str, str] | None = None) -> ColumnMap:
    """The column map for a file whose rows have ``present`` columns: ``fmt`` and ``columns`` as given (the
    user's correction), else detected. InvalidSpec naming a part left empty, a part the format lacks, or a
    column that is not there (with the columns there are)."""
    there = ", ".join(present) or "none"
    chosen = None
    if fmt is None:
        found = detect(present)
        if found is None and not columns:
            raise InvalidSpec(
                f"no chat format fits the columns ({there})",
                hint="give --format (messages, sharegpt, alpaca, prompt_completion) and --column PART=COLUMN",
            )
        chosen = found.format if found else None
    else:
        try:
            chosen = Format(fmt)
        except ValueError as exc:
            raise InvalidSpec(f"unknown format {fmt!r}", hint=f"one of {', '.join(f.value for f in Format)}") from exc
    if chosen is None:  # columns given without a format: the format whose parts they name
        names = set(columns or {})
        chosen = next((f for f in Format if names <= set(DEFAULT_COLUMNS[f])), None)
        if chosen is None:
            raise InvalidSpec(f"no format has the parts {', '.join(sorted(names))}", hint="give --format too")
    parts = DEFAULT_COLUMNS[chosen]
    for part, column in (columns or {}).items():
        if part not in parts:
            raise InvalidSpec(f"the {chosen} format has no part {part!r}", hint=f"its parts: {', '.join(parts)}")
        if not column.strip():
            raise InvalidSpec(
                f"the column map leaves {part!r} empty", hint=f"name the column {part} is read from (columns: {there})"
            )
    mapped = ColumnMap(format=chosen, columns=dict(columns or {}))
    missing = [f"{p} → {mapped.column(p)!r}" for p in parts if p not in OPTIONAL and mapped.column(p) not in present]
    if missing:
        raise InvalidSpec(
            f"the {chosen} format needs columns the data lacks: {', '.join(missing)} (its columns: {there})",
            hint="map each part to a column with --column PART=COLUMN",
        )
    return mapped


# ------------------------------------------------------------------------------------------------ validation


@dataclass(frozen=True)
class Checked:
    columns: ColumnMap
    splits: dict[str, int]  # split → rows
    report: dict[str, Any]


def check(
    root: Path, files: Mapping[str, list[str]], builder: str, *, fmt: str | None, columns: Mapping[str, str] | None
) -> Checked:
    """Validate a stored version row by row: its column map (detected from the first file, or as given), then
    each split through a ``Checker`` (eval against train's rows). InvalidSpec when the map does not fit, or a
    split has no rows at all."""
    first = root / next(iter(files.values()))[0]
    mapped = column_map(columns_of(first, builder), fmt=fmt, columns=columns)
    report: dict[str, Any] = {"splits": {}}
    counts: dict[str, int] = {}
    train: frozenset[str] = frozenset()
    for split in SPLITS:
        if split not in files:
            continue
        checker = Checker(columns=mapped, keep=PROBLEMS_KEPT, against=train if split == "eval" else frozenset())
        problems: list[dict[str, Any]] = []
        for name in files[split]:
            before = len(checker.problems)
            for line, row in rows_of(root / name, builder):
                checker.add(line, row)
            problems += [{"file": name, "line": p.line, "message": p.message} for p in checker.problems[before:]]
        if checker.rows == 0:
            raise InvalidSpec(
                f"the {split} split has no rows ({', '.join(files[split])})", hint="give a file with rows"
            )
        if split == "train":
            train = frozenset(checker.seen)
        counts[split] = checker.rows
        report["splits"][split] = {
            "rows": checker.rows,
            "valid": checker.valid,
            "problems": problems,
            "problem_count": checker.problem_count,
            "duplicates": checker.duplicates,
            "shared_with_train": checker.shared,
            "summary": checker.summary(),
        }
    return Checked(columns=mapped, splits=counts, report=report)


def normalized(
    root: Path, files: Mapping[str, list[str]], builder: str, columns: ColumnMap, *, split: str = "train"
) -> Iterator[tuple[int, Any, list[dict[str, str]] | None, str | None]]:
    """(line, raw row, its messages or None, the problem or None) for each row of ``split``, in order."""
    for name in files.get(split, []):
        for line, row in rows_of(root / name, builder):
            checker = Checker(columns=columns, keep=1)
            messages = checker.add(line, row)
            yield line, row, messages, checker.problems[0].message if checker.problems else None
