"""Slow clients holding connections to the gateway while real chats are answered.

Starts the standalone gateway in front of the mock runtime (``gateway_rig``) with deadlines of ``--header-timeout``
seconds on request lines and headers and ``--body-timeout`` seconds on bodies, measures a real client's chat latency
while nothing else runs, then opens ``--slow`` connections from another process, in three kinds of equal number:
headers sent and the body trickled one byte a second ("body", with a working key: an unknown one is refused before
the body is read), the request line sent and the headers trickled one byte a second ("headers"), and connections
that send nothing ("silent"). They are held ``--hold`` seconds while the client chats. Prints the client's p50/p99
idle and during, and for each kind how many connections the gateway cut off (with 408, or closed without an answer)
and when (seconds after the connection opened), and how many it still held at the end. The soft limit on open files
is raised for this process and the gateway it starts (``resource.setrlimit``).

    python benchmarks/slow_clients.py [--slow 2000] [--hold 40] [--header-timeout 10] [--body-timeout 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from gateway_rig import chat_latencies, gateway_rig, machine, p50_p99, raise_fd_limit

KINDS = ("body", "headers", "silent")


@dataclass
class Outcome:
    kind: str
    status: int | None = None  # the status the gateway answered with, if it answered
    closed_after_s: float | None = None  # when the gateway answered or closed, after the connection opened


async def _hold(port: int, key: str, kind: str, hold_s: float, opened: asyncio.Event) -> Outcome:
    outcome = Outcome(kind)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        opened.set()
        return outcome
    began = time.monotonic()
    if kind == "body":
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {key}\r\ncontent-length: 1000\r\n\r\n{{".encode()
        )
    elif kind == "headers":
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n")
    opened.set()

    async def trickle() -> None:
        while True:
            await asyncio.sleep(1)
            if kind != "silent":
                writer.write(b" " if kind == "body" else b"x")

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(hold_s):
            first = await reader.read(64)  # an answer, or b"" when the gateway closed the connection
            outcome.closed_after_s = time.monotonic() - began
            if first.startswith(b"HTTP/1."):
                outcome.status = int(first[9:12])
    except (TimeoutError, ConnectionError):
        pass  # still held at the end (or reset: counted as closed below)
    finally:
        sender.cancel()
        writer.close()
    return outcome


def _slow_clients(port: int, key: str, count: int, hold_s: float, out: Connection) -> None:
    """In a process of its own: open ``count`` slow connections, say so, hold them, report their outcomes."""
    raise_fd_limit(count + 256)

    async def run() -> list[Outcome]:
        tasks = []
        for i in range(count):
            opened = asyncio.Event()
            tasks.append(asyncio.create_task(_hold(port, key, KINDS[i % len(KINDS)], hold_s, opened)))
            await opened.wait()  # one at a time: the listen backlog is not what is measured
        out.send("open")
        return list(await asyncio.gather(*tasks))

    out.send(asyncio.run(run()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=2000, help="slow connections (a third of each kind)")
    parser.add_argument("--hold", type=float, default=40.0, help="seconds each slow connection is held")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="the gateway's COVE_HEADER_TIMEOUT_S")
    parser.add_argument("--body-timeout", type=float, default=10.0, help="the gateway's COVE_BODY_TIMEOUT_S")
    parser.add_argument("--chats", type=int, default=300, help="the client's chats measured idle")
    args = parser.parse_args()
    limit = raise_fd_limit(2 * args.slow + 1024)  # this process and the gateway it starts (which inherits it)
    print(machine())
    print(f"open files: soft limit raised to {limit} for this process and the gateway")
    env = {"COVE_BODY_TIMEOUT_S": str(args.body_timeout), "COVE_HEADER_TIMEOUT_S": str(args.header_timeout)}
    with gateway_rig(env=env) as rig:
        chat_latencies(rig, count=20)  # warm-up
        idle = chat_latencies(rig, count=args.chats)
        receiving, sending = multiprocessing.Pipe(duplex=False)
        slow = multiprocessing.Process(
            target=_slow_clients, args=(rig.port, rig.key, args.slow, args.hold, sending), daemon=True
        )
        began = time.perf_counter()
        slow.start()
        assert receiving.recv() == "open"
        opening = time.perf_counter() - began
        rss_held = rig.rss_mib()
        loaded = chat_latencies(rig, until=receiving.poll)
        outcomes: list[Outcome] = receiving.recv()
        slow.join()
        alive = rig.gateway.poll() is None
        print(
            f"{args.slow} slow connections opened in {opening:.1f} s, held up to {args.hold:g} s; deadlines: "
            f"headers {args.header_timeout:g} s, body {args.body_timeout:g} s; "
            f"gateway RSS with them open {rss_held:.0f} MiB"
        )
        print(f"  client, idle:                 p50 / p99 {p50_p99(idle)} ({len(idle)} chats)")
        print(f"  client, during slow clients:  p50 / p99 {p50_p99(loaded)} ({len(loaded)} chats, all 200)")
        for kind in KINDS:
            mine = [o for o in outcomes if o.kind == kind]
            answered: dict[int, list[float]] = {}
            silent_close: list[float] = []
            for o in mine:
                if o.status is not None:
                    answered.setdefault(o.status, []).append(o.closed_after_s or 0.0)
                elif o.closed_after_s is not None:
                    silent_close.append(o.closed_after_s)
            held = len(mine) - sum(len(v) for v in answered.values()) - len(silent_close)
            parts = [
                f"{status}: {len(times)} after {min(times):.1f}–{max(times):.1f} s (median "
                f"{statistics.median(times):.1f})"
                for status, times in sorted(answered.items())
            ]
            if silent_close:
                parts.append(f"closed without an answer: {len(silent_close)} after {min(silent_close):.1f} s")
            parts.append(f"still held at {args.hold:g} s: {held}")
            print(f"  {kind:8} ({len(mine)}): " + "; ".join(parts))
        print(f"  gateway alive after: {alive}")


if __name__ == "__main__":
    main()
