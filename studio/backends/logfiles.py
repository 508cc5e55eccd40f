"""Reading the end of a log file, as processes write it (the local backend's replicas and tasks, ``cove up``'s
parts)."""

from __future__ import annotations

import os
from pathlib import Path


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a text file, read from its end."""
    if n <= 0:
        return []
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size, block, data = fh.tell(), 8192, b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(block, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
    except OSError:  # missing, or unreadable: no lines to show
        return []
    return [line for line in data.decode("utf-8", "replace").splitlines()[-n:]]
