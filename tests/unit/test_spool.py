"""The usage spool: what its lines stand for, carried open requests, and replay of a dead process's files."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from studio.gateway.spool import INTERRUPTED, Spool, dead, forget, read_lines, rows_of

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def record(rid: str, **fields: object) -> dict[str, object]:
    return {
        "request_id": rid,
        "api_key_id": 1,
        "deployment": "chat",
        "endpoint": "chat.completions",
        "stream": True,
        "status_code": 200,
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "estimated": False,
        "latency_ms": 1.0,
        "ttft_ms": None,
        "created_at": NOW,
        "model_version": None,
        "cost_micros": 0,
        **fields,
    }


def opened(rid: str) -> dict[str, object]:
    fields = record(rid, status_code=0, completion_tokens=0, estimated=True)
    fields.pop("request_id")
    return fields


def test_each_request_is_one_row_done_over_open_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.start()
    spool.open("a", opened("a"))
    spool.open("b", opened("b"))
    spool.done(record("a"))
    spool.done(record("a"))  # written twice (a retry of the same record): still one row
    segments, in_flight = spool.rotate()
    assert in_flight == {"b"}
    rows = spool.take(segments, in_flight)
    assert [(r["request_id"], r["status_code"], r["created_at"]) for r in rows] == [("a", 200, NOW)]
    # the process dies with "b" open: its open record was carried into the segment now being written
    assert sorted(
        (r["request_id"], r["status_code"], r["prompt_tokens"], r["completion_tokens"])
        for r in rows_of(read_lines(sorted(tmp_path.glob("*.jsonl"))))
    ) == [
        ("a", 200, 7, 3),
        ("b", INTERRUPTED, 7, 0),
    ]
    spool.written(segments)
    assert rows_of([b'{"k": "done", "request_id": "c", "created_at": "2026-12-06T12:00:00+00:00"}', b'{"k": "do']) == [
        {"request_id": "c", "created_at": NOW}
    ]
    spool.close()


def test_a_spool_of_a_live_process_is_left_alone_and_a_dead_ones_replayed(tmp_path: Path) -> None:
    live = Spool(tmp_path)
    live.start()
    live.open("mine", opened("mine"))
    # another process writes its spool and is killed (its lock is released with it)
    script = (
        "import os, sys; from pathlib import Path; from studio.gateway.spool import Spool; "
        f"s = Spool(Path({str(tmp_path)!r})); s.start(); "
        "s.open('theirs', {'created_at': '2026-12-06T12:00:00+00:00', 'prompt_tokens': 5}); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", script], check=False, env={**os.environ})
    found = dead(tmp_path)
    assert len(found) == 1
    lock, segments = found[0]
    assert [(r["request_id"], r["status_code"], r["prompt_tokens"]) for r in rows_of(read_lines(segments))] == [
        ("theirs", INTERRUPTED, 5)
    ]
    forget(lock, segments)
    assert dead(tmp_path) == []
    assert {p.name.split("-")[0].split(".")[0] for p in tmp_path.iterdir()} == {live.boot}
    live.done(record("mine"))
    segments, in_flight = live.rotate()
    live.take(segments, in_flight)
    live.written(segments)
    live.close()
    assert list(tmp_path.iterdir()) == []  # an emptied spool leaves nothing behind


def test_a_full_disk_is_reported_not_hidden(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.start()
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, spool._fd)  # every write now fails with ENOSPC, as on a full disk
    assert spool.open("a", opened("a")) is False
    assert spool.done(record("a")) is False
    assert spool.in_flight == {}
    os.close(full)
    spool.close()
