"""The benchmark process: ``python -m studio.bench PLAN_JSON`` runs one ``BenchPlan`` and writes ``result.json``.

It runs apart from the control plane (as ``studio.trainer`` does) and needs only the plan, the server it names and
the key in the environment variable ``plan.api_key_env`` (else the plan's ``api_key``). Progress goes to stdout a
line at a time, and to ``progress.json`` (a ``BenchProgress``: the steps finished, the last line); the result (a
``BenchResult``: every step's summary and the sweep's answer, the plan without its key) is written whole beside the
plan. Exit status: 0 when the
run ended (whatever it measured), 1 when the plan could not be run, 2 on a usage error.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from studio.benchmark import BenchPlan, BenchProgress
from studio.errors import CoveError, explain

PLAN_FILE, RESULT_FILE, PROGRESS_FILE = "plan.json", "result.json", "progress.json"


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m studio.bench PLAN_JSON", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        plan = BenchPlan.model_validate_json(path.read_text())
    except (OSError, ValidationError, CoveError) as exc:
        detail = explain(exc) if isinstance(exc, ValidationError) else str(exc)
        print(f"error: cannot read the plan {path}: {detail}", file=sys.stderr)
        return 1
    from studio.loadgen import run_plan

    steps = 0

    def say(line: str) -> None:
        nonlocal steps
        print(line, flush=True)
        steps += line.startswith(("  pass", "  FAIL"))  # a sweep's probe ended
        _write(path.parent / PROGRESS_FILE, BenchProgress(steps=steps, line=line.strip()).model_dump_json())

    key = os.environ.get(plan.api_key_env) or plan.api_key
    result = asyncio.run(run_plan(plan, api_key=key, say=say))
    result = result.model_copy(update={"plan": plan.model_copy(update={"api_key": None})})
    _write(path.parent / RESULT_FILE, result.model_dump_json(indent=2))
    print(f"wrote {path.parent / RESULT_FILE}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
