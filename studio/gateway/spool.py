"""The usage spool: a write-ahead log of metered requests on local disk, so a crash loses none and none is billed twice.

Each gateway process appends to files of its own under ``<home>/spool/``: ``<boot>.lock`` (held with ``flock`` while
the process lives) and segments ``<boot>-<seq>.jsonl``, one JSON object a line:

- ``{"k": "open", "request_id": …, …}`` when a request is admitted (before the runtime is asked): its key,
  deployment, endpoint and the prompt tokens it was admitted with, priced;
- ``{"k": "at", "request_id": …, "completion_tokens": …, "cost_micros": …}``, a checkpoint of an open stream: what
  its client had been sent when it was written (``checkpoint``, once per ``usage_checkpoint_s`` per open stream);
- ``{"k": "done", "request_id": …, …}`` when it is metered (a ``UsageRecord``'s columns).

A line is written with one ``write(2)`` as it happens (it is in the kernel once the call returns, so ``kill -9``
loses nothing) and the file is ``fsync``'d in batches (``sync``, every ``usage_spool_sync_s``: a power cut loses at
most that). The ``done`` records appended are also kept in memory (``batch``): the flush writes them from there, so a
live process never reads its own files back. ``rotate`` takes the batch and closes the segment being written
(carrying the open requests and their last checkpoints into the next); the closed segments are deleted once the
database has the batch, and are read back only where memory does not hold them: past ``MAX_BATCH`` rows waiting (the
database has been down a long while; the batch is dropped from memory and the next flush reads the segments), and in
the spools of processes that died. A process that died leaves its lock free: the next gateway to start replays its
segments (``dead`` / ``rows_of``). Rows carry the request id, unique in ``usage_records`` and inserted-or-ignored, so a
segment replayed after its rows were written (a crash between the commit and the delete) counts nothing twice.

A request still open when its process died is billed as the spool last saw it: its admitted prompt tokens, the
completion tokens of its last checkpoint (none before the first), status 499 (the answer ended early),
``estimated``.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
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
MAX_BATCH = 100_000  # ``done`` records kept in memory for the next flush; past it the flush reads the segments

_BOOT = uuid.uuid4().hex[:20]  # this process's random part of every request id
_count = itertools.count(1)


def _reseed() -> None:  # a forked child must not hand out its parent's ids
    global _BOOT, _count
    _BOOT, _count = uuid.uuid4().hex[:20], itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """An id unique across processes and restarts (80 random bits per process, then a counter; 32 hex digits, as a
    UUID's): a ``uuid4`` per request costs a ``getrandom`` call on the hot path."""
    return f"{_BOOT}{next(_count):012x}"


def rows_of(lines: Iterable[bytes], in_flight: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The usage rows segments' lines stand for: each request once (its ``done`` record, else its ``open`` one as an
    interrupted request, with the completion tokens and cost of its last checkpoint), leaving out requests still
    ``in_flight`` (their ``open`` record was carried into the next segment). A torn last line (the process died
    mid-write) is skipped: that request's ``open`` record (or its previous checkpoint) bills it."""
    done: dict[str, dict[str, Any]] = {}
    opened: dict[str, dict[str, Any]] = {}
    reached: dict[str, dict[str, Any]] = {}
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
        (done if kind == "done" else reached if kind == "at" else opened)[rid] = record
    rows = []
    for rid, record in opened.items():
        if rid not in done and rid not in in_flight:
            rows.append({**record, **reached.get(rid, {}), "status_code": INTERRUPTED, "estimated": True})
    rows.extend(done.values())
    for row in rows:
        row["created_at"] = datetime.fromisoformat(row["created_at"])
    return rows


def read_lines(paths: Iterable[Path]) -> Iterator[bytes]:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            yield from path.read_bytes().split(b"\n")


@dataclass(frozen=True)
class Batch:
    """What one flush writes: ``rows`` (the ``done`` records metered since the last flush), or None where memory
    does not hold them all and they are read from ``segments`` (the closed ones, deleted once written), leaving out
    the requests ``in_flight`` when the batch was taken."""

    segments: list[Path]
    rows: list[dict[str, Any]] | None
    in_flight: frozenset[str] = frozenset()


@dataclass
class Spool:
    """One gateway process's spool in ``folder``. ``open``/``checkpoint``/``done``/``rotate``/``restore`` run on the
    event loop (one ``write`` each, nothing awaited) and the writes return False when the disk refused the line (the
    caller counts it and keeps the record in memory); ``sync``, ``rows`` and ``written`` run on a worker thread."""

    folder: Path
    boot: str = field(default_factory=lambda: uuid.uuid4().hex)
    in_flight: dict[str, bytes] = field(default_factory=dict)  # request id → its open line, carried across segments
    reached: dict[str, bytes] = field(default_factory=dict)  # request id → its last checkpoint line, carried too
    batch: list[dict[str, Any]] = field(default_factory=list)  # ``done`` records appended since the last ``rotate``
    closed: list[Path] = field(default_factory=list)  # segments written and not yet in the database
    _spilled: bool = False  # ``batch`` was dropped (over ``MAX_BATCH``): the next flush reads the closed segments
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

    def checkpoint(self, reached: Mapping[str, Mapping[str, Any]]) -> bool:
        """Append what each open request in ``reached`` (request id → ``completion_tokens`` and ``cost_micros`` so
        far) has been sent, in one ``write``; what a replay bills it if this process dies before it ends. Requests
        no longer open are left out."""
        lines = []
        for rid, fields in reached.items():
            if rid in self.in_flight:
                line = orjson.dumps({"k": "at", "request_id": rid, **fields}) + b"\n"
                self.reached[rid] = line
                lines.append(line)
        return self._write(b"".join(lines)) if lines else True

    def done(self, record: dict[str, Any]) -> bool:
        """Append a metered request (``record`` is then the spool's: kept as the flush's row, not copied)."""
        rid = record["request_id"]
        self.in_flight.pop(rid, None)
        self.reached.pop(rid, None)
        if not self._write(orjson.dumps({"k": "done", **record}) + b"\n"):
            return False
        if not self._spilled:
            self.batch.append(record)
            if len(self.batch) > MAX_BATCH:
                self._spill()
        return True

    def _spill(self) -> None:
        log.warning("usage spool: over %d records wait for the database; the flush reads them from disk", MAX_BATCH)
        self.batch, self._spilled = [], True

    def sync(self) -> None:
        """``fsync`` what was appended since the last call (a worker thread's job)."""
        if not self._dirty:
            return
        self._dirty = False
        with self._guard:
            fd = self._fd
            with contextlib.suppress(OSError):  # a closed segment is synced in ``rows``
                os.fsync(fd)

    def rotate(self) -> Batch:
        """Take the batch the flush writes and close the segment being written, starting the next with the open
        requests (and their last checkpoints) carried into it; on the event loop, with nothing awaited, so the batch
        is exactly what was metered before this call and what the closed segments hold beyond what was carried."""
        rows, self.batch = (None if self._spilled else self.batch), []
        self._spilled = False
        if self._fd >= 0 and self._fresh:  # else nothing new since the last rotation: keep writing this segment
            old, self._fd = self._fd, self._open_segment()
            self._retired.append(old)
            self.closed.append(self._segment(self._seq - 1))
            for rid, line in self.in_flight.items():
                self._write(line)
                if rid in self.reached:
                    self._write(self.reached[rid])
            self._fresh = 0  # carried lines alone are no reason to rotate again
        return Batch(list(self.closed), rows, frozenset(self.in_flight) if rows is None else frozenset())

    def restore(self, batch: Batch) -> None:
        """The database did not take ``batch``: the next flush writes it again (from memory, or from its segments,
        still on disk, once more than ``MAX_BATCH`` rows wait)."""
        if batch.rows is None or len(batch.rows) + len(self.batch) > MAX_BATCH:
            if not self._spilled:
                self._spill()
        elif not self._spilled:
            self.batch[:0] = batch.rows

    def rows(self, batch: Batch) -> list[dict[str, Any]]:
        """``batch``'s rows (worker thread): the descriptors of the closed segments are synced and closed first."""
        with self._guard:
            retired, self._retired = self._retired, []
            for fd in retired:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                os.close(fd)
        if batch.rows is not None:
            return batch.rows
        return rows_of(read_lines(batch.segments), batch.in_flight)

    def written(self, batch: Batch) -> None:
        """``batch``'s rows are in the database: delete its segments (worker thread)."""
        for path in batch.segments:
            path.unlink(missing_ok=True)
        self.closed = [p for p in self.closed if p not in batch.segments]

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
    """The spools in ``folder`` whose process is gone (their lock was free when tried): each lock file and its
    segments. The lock is taken only to test it and released at once, so two gateways starting together may both
    replay one dead spool: its rows are inserted-or-ignored, counted once still. A live gateway's spool is left
    alone."""
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
        os.close(fd)
    return found


def forget(lock: Path, segments: list[Path]) -> None:
    """A dead spool's rows are in the database: delete it."""
    for path in segments:
        path.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
