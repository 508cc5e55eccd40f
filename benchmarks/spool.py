"""What a usage record costs the gateway's spool: the append (one write per record, on the event loop), the batched
fsync (on a worker thread), and turning a flush's batch into rows: from memory, as a live gateway does, and read back
from the segments, as a replay (and, before, every flush) does. Prints microseconds per record and milliseconds per
fsync.

    python benchmarks/spool.py [RECORDS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from studio.gateway.proxy import Metered
from studio.gateway.spool import Batch, Spool, read_lines, rows_of


def main(n: int = 100_000) -> None:
    with tempfile.TemporaryDirectory(dir=Path.home()) as folder:
        spool = Spool(Path(folder))
        spool.start()
        record = Metered(1, "chat", "chat.completions", True, 200, 7, 3, False, 12.5, 3.2, datetime.now(UTC), None, 0)
        began = time.perf_counter()
        for i in range(n):
            spool.done(record._replace(request_id=f"{i:032x}")._asdict())
        append = (time.perf_counter() - began) / n
        spool.sync()  # the periodic fsync's job: not part of the rows' cost
        began = time.perf_counter()
        batch = spool.rotate()
        rows = spool.rows(batch)
        memory = (time.perf_counter() - began) / len(rows)
        began = time.perf_counter()
        rows = rows_of(read_lines(batch.segments))
        disk = (time.perf_counter() - began) / len(rows)
        spool.written(Batch(batch.segments, rows))
        syncs = []
        for _ in range(20):
            for i in range(100):
                spool.done(record._replace(request_id=f"s{i:031x}")._asdict())
            began = time.perf_counter()
            spool.sync()
            syncs.append(time.perf_counter() - began)
        spool.close()
    syncs.sort()
    print(f"append: {append * 1e6:.1f} µs per record ({n} records)")
    print(f"a flush's rows: {memory * 1e6:.2f} µs per record from memory, {disk * 1e6:.1f} µs read back from disk")
    print(f"fsync of 100 records: median {syncs[10] * 1e3:.2f} ms, max {syncs[-1] * 1e3:.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
