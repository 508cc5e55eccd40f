"""The benchmark process: ``python -m studio.bench PLAN_JSON`` runs one ``BenchPlan`` and writes ``result.json``.

It runs apart from the control plane (as ``studio.trainer`` does) and needs only the plan, the server it names and
the key in the environment variable ``plan.api_key_env``. Progress goes to stdout a line at a time; the result (a
``BenchResult``: every step's summary and the sweep's answer) is written beside the plan. Exit status: 0 when the
run ended (whatever it measured), 1 when the plan could not be run, 2 on a usage error.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from studio.benchmark import BenchPlan
from studio.errors import CoveError, explain

RESULT_FILE = "result.json"


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

    result = asyncio.run(run_plan(plan, api_key=os.environ.get(plan.api_key_env), say=lambda s: print(s, flush=True)))
    (path.parent / RESULT_FILE).write_text(result.model_dump_json(indent=2))
    print(f"wrote {path.parent / RESULT_FILE}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
