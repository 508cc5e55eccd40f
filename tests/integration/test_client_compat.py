"""What the compatibility report says the gateway metered for one client's run (benchmarks/client_compat.py):
only that run's usage rows, served / cancelled / errors apart, and billed tokens without those of errors."""

from __future__ import annotations

from typing import Any

from benchmarks.client_compat import last_usage_id, metered
from studio.db import Database, utcnow
from studio.services import usage


def rows(deployment: str, *answers: tuple[int, int, int]) -> list[dict[str, Any]]:
    base = {"api_key_id": None, "deployment": deployment, "endpoint": "chat.completions", "stream": True}
    now = {"latency_ms": 1.0, "ttft_ms": None, "created_at": utcnow(), "estimated": False}
    return [
        {**base, **now, "status_code": status, "prompt_tokens": prompt, "completion_tokens": completion}
        for status, prompt, completion in answers
    ]


def test_a_run_is_metered_from_its_own_rows_only(db: Database) -> None:
    usage.record_usage(db=db, records=rows("demo", (200, 99, 99)))  # an earlier run
    usage.record_usage(db=db, records=rows("other", (200, 7, 7)))  # another deployment
    before = last_usage_id(db, "demo")
    usage.record_usage(db=db, records=rows("demo", (200, 30, 16), (200, 30, 16), (499, 30, 4), (502, 30, 1)))

    seen = metered(db, "demo", before, expected=4)

    assert (seen.rows, seen.served, seen.cancelled, seen.errors) == (4, 2, 1, 1)
    assert (seen.prompt_tokens, seen.completion_tokens) == (90, 36)  # the error's tokens are not billed


def test_fewer_rows_than_requests_is_reported_as_found(db: Database) -> None:
    usage.record_usage(db=db, records=rows("demo", (200, 30, 16)))
    seen = metered(db, "demo", 0, expected=3, timeout=0.5)
    assert seen.rows == 1
