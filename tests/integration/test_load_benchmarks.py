"""The load benchmarks (``benchmarks/key_flood.py``, ``slow_clients.py``, ``many_streams.py``) run at a tiny size
against real gateway processes, so that the scripts cannot rot; what they print is checked, not timed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.runtime
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, env=env, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_key_flood_is_refused_while_the_client_chats() -> None:
    out = _run("key_flood.py", "--keys", "500", "--connections", "50", "--addresses", "4", "--chats", "20")
    assert out.count("all 200") == 2  # the real client's every chat answered, with and without the per-address limit
    assert out.count("refused: 100.0%") == 2
    limited, unlimited = out.split("per-address limit out of the way")
    assert int(re.search(r"429 per-address limit: (\d+)", limited)[1]) > 0  # type: ignore[index]
    assert "429 per-address limit: 0)" in unlimited


def test_slow_clients_are_cut_off_while_the_client_chats() -> None:
    out = _run(
        "slow_clients.py",
        "--slow",
        "30",
        "--hold",
        "6",
        "--header-timeout",
        "2",
        "--body-timeout",
        "1",
        "--chats",
        "20",
    )
    assert "all 200" in out
    assert re.search(r"body +\(10\): 408: 10 after 1\.\d", out), out  # each at its deadline, no sooner
    assert re.search(r"headers +\(10\): 408: 10 after 2\.\d", out), out
    assert re.search(r"silent +\(10\): 408: 10 after 2\.\d", out), out
    assert "gateway alive after: True" in out


def test_many_streams_have_no_errors() -> None:
    out = _run("many_streams.py", "--streams", "50", "--bursts", "1", "--delay-ms", "5")
    assert out.count("errors 0") == 2, out
    assert "added by the gateway at p99: TTFT" in out
    assert re.search(r"gateway RSS: before \d+ MiB, peak \d+ MiB", out)
