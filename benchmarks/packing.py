"""GPU memory packing: how much of a shared GPU pool Cove's admission (``studio.pools.admit``) fills, against the
most any placement could.

Replays a seeded trace of deployments and notebooks arriving and leaving (Poisson arrivals, exponential lifetimes)
on a HAMi pool: whole GPUs (1 or 2) and memory slices of several sizes. Each arrival is admitted or refused by
``studio.pools.admit`` beside the claims then held; refused requests are dropped. Reports, time-weighted over the
trace:

- the share of the pool's GPU memory Cove's admission keeps allocated;
- the same for the fluid bound: an admitter that refuses only when the pool's total free memory (or, for whole
  GPUs, its count of GPUs no claim touches, taking slices as packed perfectly) is too small. No placement of the
  same trace keeps more allocated at every instant under this admission rule, so Cove / bound is the packing
  efficiency;
- refusals, and those the fluid bound would have admitted (fragmentation);
- "stranded": requests ``admit`` admitted that no GPU could take where the running claims really are. ``admit``
  places every held claim afresh, in order, at each decision (``pools._place``), as if slices moved; the device
  plugin never moves a running slice, so each is kept here on the GPU it got (first fit) and a request admitted
  against a re-packed picture that fits nowhere in the real one is counted (its pod would stay Pending).

    .venv/bin/python benchmarks/packing.py [--seeds 1 2 3] [--gpus 8] [--arrivals 4000] [--load 1.3]
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.pools import Claim, admit
from studio.values import PoolBase, Resources, Sharing

GPU_MIB = 81920
SLICE_MIB = 1024
# (share of arrivals, resources): deployments on whole GPUs, and slices as notebooks and small models ask them.
MIX = [
    (0.15, Resources(cpu=1, memory_mib=64, gpus=1)),
    (0.05, Resources(cpu=1, memory_mib=64, gpus=2)),
    (0.20, Resources(cpu=1, memory_mib=64, gpu_memory_mib=8 * 1024)),
    (0.25, Resources(cpu=1, memory_mib=64, gpu_memory_mib=16 * 1024)),
    (0.20, Resources(cpu=1, memory_mib=64, gpu_memory_mib=24 * 1024)),
    (0.15, Resources(cpu=1, memory_mib=64, gpu_memory_mib=40 * 1024)),
]


def memory_of(res: Resources) -> int:
    return res.gpus * GPU_MIB if res.gpus else res.gpu_memory_mib


@dataclass
class Run:
    allocated_time: float = 0.0  # ∫ allocated MiB dt
    refused: int = 0
    refused_fragmented: int = 0  # refused although the fluid bound had room at that instant
    stranded: int = 0  # admitted, but no GPU has room where the running claims really are


class Devices:
    """Where claims really are: each stays on the GPUs it was put on (first fit) until it leaves."""

    def __init__(self, gpus: int, *, best_fit: bool) -> None:
        self.best_fit = best_fit
        self.free = [GPU_MIB] * gpus
        self.on: dict[int, list[tuple[int, int]]] = {}  # request → [(gpu, MiB)]

    def place(self, index: int, res: Resources) -> bool:
        if res.gpus:
            idle = [g for g, free in enumerate(self.free) if free == GPU_MIB][: res.gpus]
            if len(idle) < res.gpus:
                return False
            taken = [(g, GPU_MIB) for g in idle]
        else:
            fits = [g for g, free in enumerate(self.free) if free >= res.gpu_memory_mib]
            if not fits:
                return False
            taken = [(min(fits, key=lambda g: self.free[g]) if self.best_fit else fits[0], res.gpu_memory_mib)]
        for g, mib in taken:
            self.free[g] -= mib
        self.on[index] = taken
        return True

    def leave(self, index: int) -> None:
        for g, mib in self.on.pop(index, []):
            self.free[g] += mib


def trace(seed: int, *, gpus: int, arrivals: int, load: float) -> list[tuple[float, float, Resources]]:
    """(arrival, lifetime, resources) for each request: offered load ``load`` × the pool's memory."""
    rng = random.Random(seed)
    mean_memory = sum(share * memory_of(res) for share, res in MIX)
    lifetime = 100.0
    rate = load * gpus * GPU_MIB / (mean_memory * lifetime)  # arrivals per unit time
    now, out = 0.0, []
    for _ in range(arrivals):
        now += rng.expovariate(rate)
        res = rng.choices([r for _, r in MIX], weights=[share for share, _ in MIX])[0]
        out.append((now, rng.expovariate(1 / lifetime), res))
    return out


def fluid_fits(held: list[Resources], res: Resources, gpus: int) -> bool:
    used = sum(memory_of(r) for r in held)
    if res.gpus:  # whole GPUs: the GPUs left once the slices are packed as tightly as memory allows
        whole = sum(r.gpus for r in held)
        sliced = sum(r.gpu_memory_mib for r in held)
        touched = -(-sliced // GPU_MIB)
        return whole + touched + res.gpus <= gpus
    return used + memory_of(res) <= gpus * GPU_MIB


def replay(
    requests: list[tuple[float, float, Resources]], *, gpus: int, fluid: bool, best_fit: bool, repack: bool = False
) -> Run:
    pool = PoolBase(name="hami", sharing=Sharing.HAMI, gpu_count=gpus, gpu_memory_mib=GPU_MIB, slice_mib=SLICE_MIB,
                    cpu_cores=10_000, memory_mib=10_000_000)  # fmt: skip
    run, held, leaving = Run(), {}, []  # held: request index → resources, in arrival order
    devices = Devices(gpus, best_fit=best_fit)
    last = 0.0
    for index, (at, lifetime, res) in enumerate(requests):
        while leaving and leaving[0][0] <= at:
            gone, which = heapq.heappop(leaving)
            run.allocated_time += (gone - last) * sum(memory_of(r) for r in held.values())
            last = gone
            del held[which]
            devices.leave(which)
        run.allocated_time += (at - last) * sum(memory_of(r) for r in held.values())
        last = at
        bound = fluid_fits(list(held.values()), res, gpus)
        if fluid:
            fits = bound
        else:
            claims = [Claim(f"r{i}", r) for i, r in held.items()]
            fits = admit(pool, claims, Claim(f"r{index}", res)).fits
        if fits and not fluid and not repack and not devices.place(index, res):
            run.stranded += 1  # the request is dropped, as a pod that never schedules would be given up on
            fits = False
        if fits:
            held[index] = res
            heapq.heappush(leaving, (at + lifetime, index))
        else:
            run.refused += 1
            run.refused_fragmented += bound
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--arrivals", type=int, default=4000)
    parser.add_argument("--load", type=float, default=1.3, help="offered memory ÷ the pool's")
    parser.add_argument("--repack", action="store_true", help="as admit sees it: slices move (no stranding)")
    parser.add_argument(
        "--best-fit", action="store_true", help="the device plugin puts a slice on the fullest GPU that takes it"
    )
    args = parser.parse_args()
    placed = "best fit" if args.best_fit else "first fit"
    print(f"pool: {args.gpus} GPUs × {GPU_MIB} MiB (HAMi, {SLICE_MIB} MiB slices, {placed}); load {args.load:g}")
    print(f"{'seed':>4}  {'Cove':>6}  {'bound':>6}  {'Cove/bound':>10}  {'refused':>7}  {'fragmented':>10}  stranded")
    ratios = []
    for seed in args.seeds:
        requests = trace(seed, gpus=args.gpus, arrivals=args.arrivals, load=args.load)
        span = requests[-1][0] * args.gpus * GPU_MIB
        cove = replay(requests, gpus=args.gpus, fluid=False, best_fit=args.best_fit, repack=args.repack)
        bound = replay(requests, gpus=args.gpus, fluid=True, best_fit=args.best_fit)
        ratio = cove.allocated_time / bound.allocated_time
        ratios.append(ratio)
        print(
            f"{seed:>4}  {cove.allocated_time / span:>6.1%}  {bound.allocated_time / span:>6.1%}  {ratio:>10.1%}  "
            f"{cove.refused:>7}  {cove.refused_fragmented:>10}  {cove.stranded:>8}"
        )
    print(f"mean Cove/bound: {sum(ratios) / len(ratios):.1%}")


if __name__ == "__main__":
    main()
