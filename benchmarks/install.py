"""How long installing Cove takes: pip against uv, on the same locked constraints, into a new virtual environment.

Each run clones this repository afresh and times ``scripts/install`` (what `make` runs first: a new venv, the
installer, then Cove editable with its test extras against constraints.txt) with COVE_INSTALLER=pip or uv. uv's
wheel cache (~/.cache/uv) is warm after its first run; the size of each installer's cache before a run is printed,
so a cold run can be told from a warm one.

    .venv/bin/python benchmarks/install.py                 # both installers, 2 runs each
    .venv/bin/python benchmarks/install.py --tool uv --runs 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def cache_size(path: Path) -> str:
    if not path.exists():
        return "none"
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{total / 1e9:.2f} GB"


def install(tool: str, workdir: Path) -> float:
    """A fresh clone in ``workdir`` and ``scripts/install`` with ``tool``; returns the seconds the script took (a new
    venv, the installer itself, Cove and its locked dependencies)."""
    clone = workdir / "cove"
    run(["git", "clone", "-q", str(ROOT), str(clone)], workdir)
    venv = clone / ".venv"
    start = time.monotonic()
    done = subprocess.run(
        [str(clone / "scripts" / "install"), str(venv)],
        cwd=clone,
        env=os.environ | {"COVE_INSTALLER": tool, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - start
    if done.returncode or (tool == "uv" and "installing with pip instead" in done.stderr):
        sys.exit(f"scripts/install with {tool} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    check = subprocess.run([venv / "bin" / "python", "-c", "import torch, studio; print(torch.__version__)"],
                           capture_output=True, text=True)  # fmt: skip
    print(f"    torch {check.stdout.strip()}, venv {cache_size(venv)}", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=["pip", "uv", "both"], default="both")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    tools = ["pip", "uv"] if args.tool == "both" else [args.tool]
    caches = {"pip": Path.home() / ".cache" / "pip", "uv": Path.home() / ".cache" / "uv"}
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}; {os.cpu_count()} cores")
    for tool in tools:
        for i in range(1, args.runs + 1):
            cache = cache_size(caches[tool])
            with tempfile.TemporaryDirectory(prefix=f"cove-install-{tool}-") as tmp:
                seconds = install(tool, Path(tmp))
            print(f"{tool} run {i}: {seconds:6.1f} s (its cache before the run: {cache})", flush=True)


if __name__ == "__main__":
    main()
