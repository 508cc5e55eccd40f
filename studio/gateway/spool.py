"""The usage spool: a write-ahead log of metered requests on local disk, so a crash loses none and none is billed twice.

Each gateway process appends to files of its own under ``<home>/spool/``: ``<boot>.lock`` (held with ``flock`` while
the process lives) and segments ``<boot>-<seq>.jsonl``, one JSON object a line:

- ``{"k": "open", "request_id": …, …}`` when a request is admitted (before the runtime is asked): its key,
  deployment, endpoint and the prompt tokens it was admitted with, priced;
- ``{"k": "done", "request_id": …, …}`` when it is metered (a ``UsageRecord``'s columns).

A line is written with one ``write(2)`` as it happens (it is in the kernel once the call returns, so ``kill -9``
loses nothing) and the file is ``fsync``'d in batches (``sync``, every ``usage_spool_sync_s``: a power cut loses at
most that). The spool is the queue the flush writes from: ``rotate`` closes the segment being written, carrying the
open requests into the next, and the closed segments are turned into rows (``rows_of``) and deleted only once the
database has them. A process that died leaves its lock free: the next gateway to start replays its segments (``dead``
/ ``replay``). Rows carry the request id, unique in ``usage_records`` and inserted-or-ignored, so a segment replayed
after its rows were written (a crash between the commit and the delete) counts nothing twice.

A request still open when its process died is billed as the spool last saw it: its admitted prompt tokens, no
completion tokens, status 499 (the answer ended early), ``estimated``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

INTERRUPTED = 499  # a request its gateway never finished: billed as one the client left


def new_request_id() -> str:
    return uuid.uuid4().hex


def rows_of(lines: Iterable[bytes], in_flight: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The usage rows segments' lines stand for: each request once (its ``done`` record, else its ``open`` one as an
    interrupted request), leaving out requests still ``in_flight`` (their ``open`` record was carried into the next
    segment). A torn last line (the process died mid-write) is skipped: that request's ``open`` record bills it."""
    done: dict[str, dict[str, Any]] = {}
    opened: dict[str, dict[str, Any]] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("skipping a torn line in the usage spool (%d bytes)", len(line))
            continue
        kind, rid = record.pop("k", None), record.get("request_id")
        if not rid:
            continue
        (done if kind == "done" else opened)[rid] = record
    rows = []
    for rid, record in opened.items():
        if rid not in done and rid not in in_flight:
            rows.append({**record, "status_code": INTERRUPTED, "estimated": True})
    rows.extend(done.values())
    for row in rows:
        row["created_at"] = datetime.fromisoformat(row["created_at"])
    return rows


def read_lines(paths: Iterable[Path]) -> Iterator[bytes]:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            yield from path.read_bytes().split(b"\n")


@dataclass
class Spool:
    """One gateway process's spool in ``folder``. ``open``/``done`` run on the event loop (one ``write`` each) and
    return False when the disk refused the line (the caller counts it and keeps the record in memory); ``sync``,
    ``take`` and the deletes run on a worker thread."""

    folder: Path
    boot: str = field(default_factory=new_request_id)
    in_flight: dict[str, bytes] = field(default_factory=dict)  # request id → its open line, carried across segments
    closed: list[Path] = field(default_factory=list)  # segments written and not yet in the database
    _seq: int = 0
    _fd: int = -1
    _lock_fd: int = -1
    _dirty: bool = False
    _fresh: int = 0  # lines appended to this segment since it was opened (carried ones aside)
    _guard: threading.Lock = field(default_factory=threading.Lock)  # one thread syncs or closes a segment at a time
    _retired: list[int] = field(default_factory=list)  # descriptors of closed segments, synced then closed off the loop

    def start(self) -> None:
        """Take this process's lock and open its first segment (raises OSError when the folder is not writable)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / f"{self.boot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = self._open_segment()

    def _segment(self, seq: int) -> Path:
        return self.folder / f"{self.boot}-{seq:08d}.jsonl"

    def _open_segment(self) -> int:
        self._seq += 1
        return os.open(self._segment(self._seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _write(self, line: bytes) -> bool:
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            log.error("usage spool: could not append a record (%s); it is kept in memory only", exc)
            return False
        if written != len(line):  # a short write on a full disk: the torn line is skipped on reading
            log.error(
                "usage spool: the disk took %d of %d bytes; the record is kept in memory only", written, len(line)
            )
            return False
        self._dirty = True
        self._fresh += 1
        return True

    def open(self, request_id: str, record: Mapping[str, Any]) -> bool:
        line = orjson.dumps({"k": "open", "request_id": request_id, **record}) + b"\n"
        self.in_flight[request_id] = line
        return self._write(line)

    def done(self, record: Mapping[str, Any]) -> bool:
        self.in_flight.pop(record["request_id"], None)
        return self._write(orjson.dumps({"k": "done", **record}) + b"\n")

    def sync(self) -> None:
        """``fsync`` what was appended since the last call (a worker thread's job)."""
        if not self._dirty:
            return
        self._dirty = False
        with self._guard:
            fd = self._fd
            with contextlib.suppress(OSError):  # a closed segment is synced in ``take``
                os.fsync(fd)

    def rotate(self) -> tuple[list[Path], frozenset[str]]:
        """Close the segment being written and start the next, carrying the open requests into it; on the event
        loop, with nothing awaited, so the batch is exactly what was metered before this call. Returns the closed
        segments not yet in the database and the requests in flight now."""
        if self._fd < 0 or not self._fresh:  # nothing new since the last rotation: keep writing this segment
            return list(self.closed), frozenset(self.in_flight)
        self._fresh = 0
        old, self._fd = self._fd, self._open_segment()
        self._retired.append(old)
        self.closed.append(self._segment(self._seq - 1))
        for line in self.in_flight.values():
            self._write(line)
        self._fresh = 0  # carried lines alone are no reason to rotate again
        return list(self.closed), frozenset(self.in_flight)

    def take(self, segments: list[Path], in_flight: frozenset[str]) -> list[dict[str, Any]]:
        """The rows of ``segments`` (worker thread): their descriptors are synced and closed first."""
        with self._guard:
            retired, self._retired = self._retired, []
            for fd in retired:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                os.close(fd)
        return rows_of(read_lines(segments), in_flight)

    def written(self, segments: list[Path]) -> None:
        """``segments``' rows are in the database: delete them (worker thread)."""
        for path in segments:
            path.unlink(missing_ok=True)
        self.closed = [p for p in self.closed if p not in segments]

    def close(self) -> None:
        with self._guard:
            for fd in [*self._retired, self._fd]:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.fsync(fd)
                    os.close(fd)
            self._retired, self._fd = [], -1
        if self._lock_fd >= 0:
            # an empty spool leaves nothing behind; one with rows left (the database was down) is replayed later
            left = False
            for path in self.folder.glob(f"{self.boot}-*.jsonl"):
                if path.stat().st_size:
                    left = True
                else:
                    path.unlink()
            if not left:
                (self.folder / f"{self.boot}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = -1


def dead(folder: Path) -> list[tuple[Path, list[Path]]]:
    """The spools in ``folder`` whose process is gone (their lock is free): each lock file, locked now by the caller
    (released by ``forget``), and its segments. A live gateway's spool is left alone."""
    found = []
    for lock in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        boot = lock.name.removesuffix(".lock")
        found.append((lock, sorted(folder.glob(f"{boot}-*.jsonl"))))
        os.close(fd)  # another gateway replaying at once would insert-or-ignore the same rows: counted once still
    return found


def forget(lock: Path, segments: list[Path]) -> None:
    """A dead spool's rows are in the database: delete it."""
    for path in segments:
        path.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
