"""Many streams at once through the gateway: errors, the gateway's memory, and what it adds to TTFT, ITL and E2E.

Starts the standalone gateway in front of the mock runtime (``gateway_rig``; the mock waits ``--delay-ms`` before
each of its ``--chunks`` chunks, so every stream of a burst is open at the same time), then sends bursts of
``--streams`` concurrent streamed chats, in turn straight to the mock and through the gateway (ABAB, ``--bursts``
each), one connection per stream. Every stream must answer 200 and carry every chunk and ``[DONE]``. Prints the
errors, p50/p99 of time to first token, inter-token latency (every gap) and end-to-end latency for each target and
what the gateway adds at p99, and the gateway's RSS before the first burst, its peak (sampled every 20 ms) and after
each burst. The soft limit on open files is raised for this process and the gateway (``resource.setrlimit``).

    python benchmarks/many_streams.py [--streams 1000] [--bursts 3] [--chunks 16] [--delay-ms 25]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import threading
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
from gateway_rig import CHAT, DEPLOYMENT, Rig, gateway_rig, machine, percentile, raise_fd_limit


@dataclass
class Burst:
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)


async def _stream(session: aiohttp.ClientSession, url: str, payload: bytes, chunks: int, burst: Burst) -> None:
    began = time.perf_counter()
    stamps: list[float] = []
    try:
        async with session.post(url, data=payload) as response:
            if response.status != 200:
                said = (await response.read())[:120].decode(errors="replace")
                burst.errors[f"HTTP {response.status}: {said}"] += 1
                return
            done = False
            async for line in response.content:
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif line.startswith(b"data: ") and b'"content"' in line:
                    stamps.append(time.perf_counter())
    except (aiohttp.ClientError, TimeoutError) as exc:
        burst.errors[type(exc).__name__] += 1
        return
    if not done or len(stamps) != chunks:
        burst.errors[f"incomplete stream ({len(stamps)} of {chunks} chunks, [DONE]: {done})"] += 1
        return
    burst.ttft.append(stamps[0] - began)
    burst.itl += [b - a for a, b in itertools.pairwise(stamps)]
    burst.e2e.append(time.perf_counter() - began)


async def burst_of(url: str, headers: dict[str, str], model: str, streams: int, chunks: int) -> Burst:
    burst = Burst()
    payload = orjson.dumps({**CHAT, "model": model, "stream": True})
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        await asyncio.gather(*(_stream(session, url, payload, chunks, burst) for _ in range(streams)))
    return burst


class PeakRss(threading.Thread):
    """Samples the gateway's RSS every 20 ms while running."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(daemon=True)
        self.rig, self.peak, self.stop = rig, rig.rss_mib(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.rig.rss_mib())


def row(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    return f"{label} p50 / p99 {percentile(ordered, 0.5) * 1e3:7.2f} / {percentile(ordered, 0.99) * 1e3:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams in a burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts to each target, alternating")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per stream")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="the mock's wait before each chunk")
    args = parser.parse_args()
    limit = raise_fd_limit(3 * args.streams + 1024)
    print(machine())
    print(f"open files: soft limit raised to {limit} for this process, the gateway and the mock")
    mock_args = ("--chunks", str(args.chunks), "--delay-ms", str(args.delay_ms))
    with gateway_rig(mock_args=mock_args) as rig:
        targets = {
            "direct": (rig.mock_url + "/v1/chat/completions", {}, "upstream"),
            "gateway": (rig.url + "/v1/chat/completions", {"authorization": f"Bearer {rig.key}"}, DEPLOYMENT),
        }
        asyncio.run(burst_of(*targets["gateway"], streams=20, chunks=args.chunks))  # warm-up
        rss_before = rig.rss_mib()
        sampler = PeakRss(rig)
        sampler.start()
        results: dict[str, Burst] = {label: Burst() for label in targets}
        after: list[float] = []
        for i in range(args.bursts):
            for label in targets if i % 2 == 0 else reversed(targets):
                began = time.perf_counter()
                burst = asyncio.run(burst_of(*targets[label], streams=args.streams, chunks=args.chunks))
                took = time.perf_counter() - began
                total = results[label]
                total.ttft += burst.ttft
                total.itl += burst.itl
                total.e2e += burst.e2e
                total.errors.update(burst.errors)
                print(f"  burst {i + 1} {label:7}: {args.streams} streams in {took:.1f} s, errors {dict(burst.errors)}")
                if label == "gateway":
                    after.append(rig.rss_mib())
        time.sleep(2)  # the usage of the last burst is flushed
        sampler.stop.set()
        sampler.join()
        rss_end = rig.rss_mib()
        print(
            f"{args.streams} concurrent streams x {args.bursts} bursts per target, {args.chunks} chunks, "
            f"{args.delay_ms:g} ms apart"
        )
        for label, burst in results.items():
            print(f"  {label:7}: errors {sum(burst.errors.values())} {dict(burst.errors) or ''}")
            print(f"           {row('TTFT', burst.ttft)}; {row('ITL', burst.itl)}; {row('E2E', burst.e2e)}")
        gw, direct = results["gateway"], results["direct"]
        added = {
            name: percentile(sorted(getattr(gw, name)), 0.99) - percentile(sorted(getattr(direct, name)), 0.99)
            for name in ("ttft", "itl", "e2e")
        }
        print("  added by the gateway at p99: " + ", ".join(f"{k.upper()} {v * 1e3:+.2f} ms" for k, v in added.items()))
        print(
            f"  gateway RSS: before {rss_before:.0f} MiB, peak {sampler.peak:.0f} MiB, after each burst "
            + " / ".join(f"{m:.0f}" for m in after)
            + f" MiB, 2 s after the last {rss_end:.0f} MiB"
        )
        if rig.gateway.poll() is not None:
            raise SystemExit(f"the gateway exited:\n{rig.log()}")


if __name__ == "__main__":
    main()
