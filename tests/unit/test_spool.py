"""The usage spool: what its lines stand for, carried open requests, and replay of a dead process's files."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from studio.gateway import spool as spool_module
from studio.gateway.spool import INTERRUPTED, Spool, dead, forget, new_request_id, read_lines, rows_of

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
    batch = spool.rotate()
    assert spool.in_flight.keys() == {"b"}
    rows = spool.rows(batch)
    assert [(r["request_id"], r["status_code"], r["created_at"]) for r in rows] == [("a", 200, NOW), ("a", 200, NOW)]
    # what the flush writes is what the closed segment holds, read back as a replay would (each request once)
    assert rows_of(read_lines(batch.segments), frozenset(spool.in_flight)) == [rows[0]]
    # the process dies with "b" open: its open record was carried into the segment now being written
    assert sorted(
        (r["request_id"], r["status_code"], r["prompt_tokens"], r["completion_tokens"])
        for r in rows_of(read_lines(sorted(tmp_path.glob("*.jsonl"))))
    ) == [
        ("a", 200, 7, 3),
        ("b", INTERRUPTED, 7, 0),
    ]
    spool.written(batch)
    assert not any(p.exists() for p in batch.segments)
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
    batch = live.rotate()
    live.rows(batch)
    live.written(batch)
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


def test_a_request_open_at_a_crash_is_billed_at_its_last_checkpoint_carried_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.start()
    spool.open("s", opened("s"))
    assert spool.checkpoint({"s": {"completion_tokens": 4, "cost_micros": 40}, "gone": {"completion_tokens": 9}})
    spool.done(record("x"))
    spool.written(batch := spool.rotate())  # the first segment is deleted: "s" and its checkpoint were carried
    spool.checkpoint({"s": {"completion_tokens": 11, "cost_micros": 110}})
    rows = rows_of(read_lines(sorted(tmp_path.glob("*.jsonl"))))  # as a replay after kill -9 reads them
    assert batch.rows == [record("x")]
    assert [(r["request_id"], r["status_code"], r["completion_tokens"], r["cost_micros"]) for r in rows] == [
        ("s", INTERRUPTED, 11, 110)
    ]
    spool.written(spool.rotate())
    rows = rows_of(read_lines(sorted(tmp_path.glob("*.jsonl"))))
    assert [(r["request_id"], r["completion_tokens"]) for r in rows] == [("s", 11)]  # the newest carried, not the first
    spool.done(record("s", completion_tokens=20))
    assert spool.reached == {}
    spool.close()


def test_the_flush_writes_from_memory_and_past_max_batch_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "MAX_BATCH", 2)
    spool = Spool(tmp_path)
    spool.start()
    spool.done(record("a"))
    failed = spool.rotate()
    assert failed.rows == [record("a")]
    spool.restore(failed)  # the database did not take it
    spool.done(record("b"))
    batch = spool.rotate()
    assert [r["request_id"] for r in spool.rows(batch)] == ["a", "b"]
    spool.restore(batch)
    spool.done(record("c"))  # three wait: over MAX_BATCH, memory lets them go and the next flush reads the segments
    assert spool.batch == []
    spool.open("open", opened("open"))
    batch = spool.rotate()
    assert batch.rows is None
    assert sorted(r["request_id"] for r in spool.rows(batch)) == ["a", "b", "c"]  # in flight: not yet
    spool.written(batch)
    spool.done(record("d"))
    assert [r["request_id"] for r in spool.rows(spool.rotate())] == ["d"]  # from memory again
    spool.close()


def test_request_ids_are_unique_32_hex_digits_and_a_forked_child_makes_its_own() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    assert theirs[:20] != new_request_id()[:20]
