"""A flood of random API keys against the gateway while a real client chats: does the client notice?

Starts the standalone gateway in front of the mock runtime (``gateway_rig``), measures a real client's chat latency
(sequential non-streaming chats on one keep-alive connection) while nothing else runs, then again while another
process sends ``--keys`` requests, each with a random bearer key, over ``--connections`` keep-alive connections
spread over ``--addresses`` source addresses (127.0.0.2, 127.0.0.3, …; the gateway limits unknown keys per client
address). Twice: with the per-address limit at its default (most of the flood gets 429 at once), and with it out of
the way (every random key is looked up in memory and refused 401), to show that the limit is not what keeps the
client's latency down. Prints the client's p50/p99 idle and during the flood, the flood's rate and answers (per
address), and, on PostgreSQL (``--database-url``), the transactions the database committed during the flood against
an idle stretch as long.

    python benchmarks/key_flood.py [--keys 100000] [--connections 32] [--addresses 8] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import os
import time
from multiprocessing.connection import Connection

import orjson
import sqlalchemy as sa
from gateway_rig import CHAT, Rig, bindable, chat_latencies, gateway_rig, machine, p50_p99

BODY = orjson.dumps(CHAT)


async def _one_connection(
    port: int, address: str, quota: list[int], codes: collections.Counter[tuple[str, int]]
) -> None:
    """Random keys one after another on a keep-alive connection from ``address`` while ``quota`` lasts."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
    tail = f"content-length: {len(BODY)}\r\n\r\n".encode() + BODY
    try:
        while quota[0] > 0:
            quota[0] -= 1
            writer.write(head + b"authorization: Bearer sk-" + os.urandom(16).hex().encode() + b"\r\n" + tail)
            headers = await reader.readuntil(b"\r\n\r\n")
            status = int(headers[9:12])
            length = 0
            for line in headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            codes[(address, status)] += 1
            if b"connection: close" in headers.lower():
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    finally:
        writer.close()


def _flood(port: int, keys: int, connections: int, addresses: list[str], out: Connection) -> None:
    """In a process of its own: send ``keys`` requests; report (seconds, {(address, status): count})."""

    async def run() -> tuple[float, collections.Counter[tuple[str, int]]]:
        quota, codes = [keys], collections.Counter[tuple[str, int]]()
        began = time.perf_counter()
        await asyncio.gather(
            *(_one_connection(port, addresses[i % len(addresses)], quota, codes) for i in range(connections))
        )
        return time.perf_counter() - began, codes

    out.send(asyncio.run(run()))


def _transactions(database_url: str) -> int | None:
    """Transactions committed and rolled back so far in the database (PostgreSQL's statistics); None on SQLite."""
    if not database_url.startswith("postgresql"):
        return None
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            row = conn.execute(
                sa.text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
            ).one()
        return int(row[0])
    finally:
        engine.dispose()


def measure(rig: Rig, args: argparse.Namespace, addresses: list[str]) -> None:
    chat_latencies(rig, count=20)  # warm-up
    idle = chat_latencies(rig, count=args.chats)
    receiving, sending = multiprocessing.Pipe(duplex=False)
    flood = multiprocessing.Process(
        target=_flood, args=(rig.port, args.keys, args.connections, addresses, sending), daemon=True
    )
    rss_before = rig.rss_mib()
    flood.start()
    before = _transactions(rig.database_url)
    loaded = chat_latencies(rig, until=receiving.poll)
    seconds, codes = receiving.recv()
    during = _transactions(rig.database_url)
    flood.join()
    rss_after = rig.rss_mib()
    print(f"  client, idle:           p50 / p99 {p50_p99(idle)} ({len(idle)} chats)")
    print(f"  client, during flood:   p50 / p99 {p50_p99(loaded)} ({len(loaded)} chats, all 200)")
    ratio = sorted(loaded)[len(loaded) // 2] / sorted(idle)[len(idle) // 2]
    print(f"  p50 during / idle:      {ratio:.2f}x")
    sent = sum(codes.values())
    by_status = collections.Counter[int]()
    for (_, status), n in codes.items():
        by_status[status] += n
    print(f"  flood: {sent} random keys in {seconds:.1f} s = {sent / seconds:,.0f} req/s; answers {dict(by_status)}")
    refused = by_status[401] + by_status[429]
    print(
        f"  refused: {refused / sent:.1%} (401 unknown key: {by_status[401]}, 429 per-address limit: {by_status[429]})"
    )
    for address in addresses:
        mine = {status: n for (a, status), n in sorted(codes.items()) if a == address}
        print(f"    from {address}: {mine}")
    print(f"  gateway RSS before / after the flood: {rss_before:.0f} / {rss_after:.0f} MiB")
    if before is not None and during is not None:
        # an idle stretch as long as the flood: the routes refresh and usage flush the gateway does anyway
        time.sleep(seconds)
        quiet = _transactions(rig.database_url)
        assert quiet is not None
        print(
            f"  database transactions during the flood: {during - before} "
            f"(an idle stretch as long: {quiet - during}; the client's {len(loaded)} chats were metered too)"
        )
    else:
        print("  database transactions: not observable on SQLite (use --database-url postgresql+psycopg://…)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="random keys the flood sends (per phase)")
    parser.add_argument(
        "--connections",
        type=int,
        default=500,
        help="the flood's keep-alive connections (an unknown key waits for the gateway's next read of new keys, "
        "and each refusal is held 1-2 x keys_recheck_s: each connection sends about 2.7 a second)",
    )
    parser.add_argument("--addresses", type=int, default=8, help="source addresses the flood spreads over")
    parser.add_argument("--chats", type=int, default=300, help="the client's chats measured idle")
    parser.add_argument("--database-url", default="", help="PostgreSQL, to count the flood's transactions")
    parser.add_argument(
        "--phases", choices=("both", "limited", "unlimited"), default="both", help="the per-address limit on/off"
    )
    args = parser.parse_args()
    addresses = [a for a in (f"127.0.0.{i + 2}" for i in range(args.addresses)) if bindable(a)] or ["127.0.0.1"]
    print(machine())
    print(f"flood from {len(addresses)} source addresses: {', '.join(addresses)}")
    phases = {
        "limited": ("per-address limit at its default (60 unknown keys a minute)", {}),
        "unlimited": (
            "per-address limit out of the way (every key looked up and refused 401)",
            {"COVE_AUTH_FAILURES_PER_MINUTE": str(10**9)},
        ),
    }
    for phase in ("limited", "unlimited") if args.phases == "both" else (args.phases,):
        title, env = phases[phase]
        print(f"\n{title}:")
        with gateway_rig(env=env, database_url=args.database_url) as rig:
            measure(rig, args, addresses)
            if rig.gateway.poll() is not None:
                raise SystemExit(f"the gateway exited:\n{rig.log()}")


if __name__ == "__main__":
    main()
