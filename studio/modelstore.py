"""The model store: a Hugging Face cache under ``COVE_HOME/models``, and checks of model folders.

Models imported from the Hub and models Cove builds (the demo model, fine-tune outputs) are laid out the same way
(``models--org--name/{refs,snapshots,blobs}``), so a runtime loads ``org/name`` with ``HF_HUB_CACHE`` set and
``HF_HUB_OFFLINE=1`` exactly as it would load from the Hub, and weights are never downloaded twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import InvalidSpec, NotFound, SourceUnavailable

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


@dataclass(frozen=True)
class FolderInfo:
    architecture: str
    model_type: str
    size_bytes: int


@dataclass(frozen=True)
class Snapshot:
    path: Path
    revision: str


def _check_safetensors(path: Path) -> None:
    """Reads the header the way loaders do: 8-byte length, then JSON. A truncated file fails here."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InvalidSpec(f"{path.name} is truncated ({size} bytes)", hint="copy the model folder again")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise InvalidSpec(
                f"{path.name} is truncated: header says {length} bytes, file has {size}",
                hint="copy the model folder again",
            )
        try:
            header = json.loads(fh.read(length))
        except ValueError as exc:
            raise InvalidSpec(f"{path.name} has an unreadable header", hint="copy the model folder again") from exc
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    if ends and 8 + length + max(ends) > size:
        raise InvalidSpec(
            f"{path.name} is truncated: tensors end past the file's {size} bytes", hint="copy the model folder again"
        )


def inspect_folder(path: Path) -> FolderInfo:
    """What a model folder holds; raises InvalidSpec naming what is missing or corrupt."""
    if not path.is_dir():
        raise NotFound(f"no model folder at {path}", hint="give the folder that holds config.json")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise InvalidSpec(
            f"{path} has no config.json, so it is not a transformers model folder",
            hint="give the folder that holds config.json and the weights",
        )
    try:
        config: dict[str, Any] = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{config_path} is not valid JSON: {exc}", hint="repair or re-download the model") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise InvalidSpec(f"{config_path} has no model_type", hint="repair or re-download the model")
    files = [p for p in path.iterdir() if p.is_file()]
    weights = [p for p in files if p.name.endswith(WEIGHT_SUFFIXES)]
    if not weights:
        raise InvalidSpec(f"{path} has no weights (*.safetensors, *.bin)", hint="copy the weight files too")
    for weight in weights:
        if weight.suffix == ".safetensors":
            _check_safetensors(weight)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InvalidSpec(
            f"{path} has no tokenizer (tokenizer.json or tokenizer.model)",
            hint="save the tokenizer into the model folder",
        )
    architectures = config.get("architectures") or [""]
    return FolderInfo(
        architecture=str(architectures[0]),
        model_type=str(config["model_type"]),
        size_bytes=sum(p.stat().st_size for p in files),
    )


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def import_folder(src: Path, repo_id: str, cache_dir: Path) -> Snapshot:
    """Store a model folder in the cache as ``repo_id``; the revision is a hash of the files, so re-importing the
    same files is a no-op and different files make a new snapshot. Files are copied to blobs, then linked."""
    files = sorted(p for p in src.iterdir() if p.is_file())
    digests = {p.name: _sha256(p) for p in files}
    revision = hashlib.sha1("".join(f"{n}\0{d}\n" for n, d in sorted(digests.items())).encode()).hexdigest()
    root = repo_folder(cache_dir, repo_id)
    snapshot = root / "snapshots" / revision
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    staging = root / "snapshots" / f".{revision}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in files:
        blob = root / "blobs" / digests[path.name]
        if not blob.exists():
            tmp = blob.with_suffix(".incomplete")
            shutil.copyfile(path, tmp)
            tmp.replace(blob)
        (staging / path.name).symlink_to(os.path.relpath(blob, snapshot))
    if snapshot.exists():
        shutil.rmtree(staging)
    else:
        staging.replace(snapshot)  # a crash mid-import leaves only the .partial folder behind
    (root / "refs" / "main").write_text(revision)
    return Snapshot(path=snapshot, revision=revision)


def human_size(n: int) -> str:
    """Bytes as people read them: 512 B, 1.5 MiB, 2.0 GiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def byte_reporter(report: Callable[[int, int], None]) -> type[Any]:
    """A tqdm class for ``snapshot_download`` that draws nothing and reports the bytes written so far.

    ``snapshot_download`` makes a files bar, a network-transfer bar and a bytes-written bar from the class it is
    given; the bytes-written one ("Reconstructing …") is the one whose total is the download's size.
    """
    from tqdm.auto import tqdm

    class BytesWritten(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(disable=False, file=io.StringIO(), mininterval=0.2)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.unit == "B" and not str(self.desc).startswith("Downloading"):
                report(int(self.n), int(self.total or 0))
            return shown

    return BytesWritten


def fetch_from_hub(
    repo_id: str,
    cache_dir: Path,
    *,
    revision: str | None = None,
    progress: Callable[[str], None] | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> Snapshot:
    """The snapshot of ``repo_id`` in the cache, downloading what is missing from the Hugging Face Hub.

    Raises NotFound for an unknown repo or revision, SourceUnavailable when the Hub cannot be reached (offline) and
    the snapshot is not cached, or when the repo is gated and no token is set. ``on_bytes(done, total)`` is called
    as files are written, for a progress bar.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if revision and _COMMIT.match(revision):  # a pinned commit that is cached needs no network at all
        with contextlib.suppress(LocalEntryNotFoundError):
            path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
            return Snapshot(path=path, revision=path.name)
    if progress:
        progress(f"resolving {repo_id}{'@' + revision if revision else ''} (Hugging Face Hub or local cache)")
    try:
        path = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                etag_timeout=10,
                tqdm_class=byte_reporter(on_bytes) if on_bytes else None,
            )
        )
    except GatedRepoError as exc:
        raise SourceUnavailable(
            f"{repo_id} is gated on the Hugging Face Hub", hint="accept its licence on the Hub and set HF_TOKEN"
        ) from exc
    except RevisionNotFoundError as exc:
        raise NotFound(f"{repo_id} has no revision {revision!r}", hint="check the branch, tag or commit") from exc
    except RepositoryNotFoundError as exc:
        raise NotFound(
            f"no model {repo_id!r} on the Hugging Face Hub",
            hint="check the spelling, or set HF_TOKEN for a private repo",
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise SourceUnavailable(
            f"{repo_id} is not in the local model cache ({cache_dir}) and the Hugging Face Hub cannot be reached",
            hint="connect this machine to the Hub, or copy the model folder here and add it by path",
        ) from exc
    except HfHubHTTPError as exc:
        raise SourceUnavailable(
            f"the Hugging Face Hub refused {repo_id}: {exc}", hint="retry later, or check HF_TOKEN"
        ) from exc
    if progress:
        progress(f"{repo_id} is at {path}")
    return Snapshot(path=path, revision=path.name)
