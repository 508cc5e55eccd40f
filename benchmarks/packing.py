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
- "stranded": requests ``admit`` admitted that no GPU could take where the running claims really are (their pods
  would stay Pending); such a request is dropped.

Rows: "sticky" (what runs): each claim stays on the GPUs it got, as the device plugin keeps it; ``admit`` is told
where each one is (``Claim.on``) and the request is put where ``admit`` says (``Admission.gpus``), one row per slice
policy. "blind": ``admit`` is not told, re-places every claim afresh as if slices moved, and the device plugin puts
the request first fit (stranding is counted). "repack": ``admit``'s own picture, as if running slices could move.

    .venv/bin/python benchmarks/packing.py [--seeds 1 2 3] [--gpus 8] [--arrivals 4000] [--load 1.3] [--policies …]
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.pools import Claim, SlicePolicy, admit, best_fit, first_fit
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
    """Where claims really are: each stays on the GPUs it was put on until it leaves, as the device plugin keeps it."""

    def __init__(self, gpus: int) -> None:
        self.free = [GPU_MIB] * gpus
        self.on: dict[int, tuple[int, ...]] = {}  # request → its GPUs

    def first_fit(self, res: Resources) -> tuple[int, ...] | None:
        """Where a device plugin blind to admission would put it (the lowest GPUs with room)."""
        if res.gpus:
            idle = tuple(g for g, free in enumerate(self.free) if free == GPU_MIB)[: res.gpus]
            return idle if len(idle) == res.gpus else None
        return next(((g,) for g, free in enumerate(self.free) if free >= res.gpu_memory_mib), None)

    def put(self, index: int, res: Resources, gpus: tuple[int, ...]) -> bool:
        """Put the request on ``gpus`` if they really have room; False (nothing changes) if not."""
        mib = GPU_MIB if res.gpus else res.gpu_memory_mib
        if len(gpus) != res.gpu_devices or any(self.free[g] < mib for g in gpus):
            return False
        for g in gpus:
            self.free[g] -= mib
        self.on[index] = gpus
        return True

    def leave(self, index: int, res: Resources) -> None:
        for g in self.on.pop(index, ()):
            self.free[g] += GPU_MIB if res.gpus else res.gpu_memory_mib


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


def worst_fit(candidates: Sequence[tuple[int, int]], need: int) -> int:
    """The emptiest GPU that takes the slice: slices spread out (a contrast, not a candidate)."""
    return max(candidates, key=lambda c: (c[1], -c[0]))[0]


POLICIES: dict[str, SlicePolicy] = {
    "best-fit": best_fit,
    "first-fit": first_fit,
    "worst-fit": worst_fit,
}


def replay(
    requests: list[tuple[float, float, Resources]],
    *,
    gpus: int,
    fluid: bool = False,
    policy: SlicePolicy = best_fit,
    mode: str = "sticky",
) -> Run:
    """``mode``: "sticky" (admit is told where each claim is and the request goes where admit says), "blind" (admit
    is not told; the device plugin puts the request first fit), "repack" (admit's own picture, nothing is checked)."""
    pool = PoolBase(name="hami", sharing=Sharing.HAMI, gpu_count=gpus, gpu_memory_mib=GPU_MIB, slice_mib=SLICE_MIB,
                    cpu_cores=10_000, memory_mib=10_000_000)  # fmt: skip
    run = Run()
    held: dict[int, Resources] = {}  # request index → resources, in arrival order
    leaving: list[tuple[float, int]] = []
    devices = Devices(gpus)
    last = 0.0
    for index, (at, lifetime, res) in enumerate(requests):
        while leaving and leaving[0][0] <= at:
            gone, which = heapq.heappop(leaving)
            run.allocated_time += (gone - last) * sum(memory_of(r) for r in held.values())
            last = gone
            devices.leave(which, held.pop(which))
        run.allocated_time += (at - last) * sum(memory_of(r) for r in held.values())
        last = at
        bound = fluid_fits(list(held.values()), res, gpus)
        if fluid:
            fits = bound
        else:
            known = mode == "sticky"
            claims = [Claim(f"r{i}", r, on=(devices.on[i],) if known else None) for i, r in held.items()]
            got = admit(pool, claims, Claim(f"r{index}", res), policy=policy)
            fits = got.fits
            if fits and mode != "repack":
                where = got.gpus[0] if mode == "sticky" else devices.first_fit(res)
                if where is None or not devices.put(index, res, where):
                    run.stranded += 1  # dropped, as a pod that never schedules would be given up on
                    fits = False
        if fits:
            held[index] = res
            heapq.heappush(leaving, (at + lifetime, index))
        else:
            run.refused += 1
            run.refused_fragmented += int(bound)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--arrivals", type=int, default=4000)
    parser.add_argument("--load", type=float, default=1.3, help="offered memory ÷ the pool's")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    args = parser.parse_args()
    print(f"pool: {args.gpus} GPUs × {GPU_MIB} MiB (HAMi, {SLICE_MIB} MiB slices); load {args.load:g}")
    print(f"{'placement':<28} {'seed':>4}  {'Cove':>6}  {'bound':>6}  {'Cove/bound':>10}  {'refused':>7}  "
          f"{'fragmented':>10}  stranded")  # fmt: skip
    rows = [("repack", "best-fit"), ("blind", "best-fit")] + [("sticky", name) for name in args.policies]
    ratios: dict[str, list[float]] = {}
    for seed in args.seeds:
        requests = trace(seed, gpus=args.gpus, arrivals=args.arrivals, load=args.load)
        span = requests[-1][0] * args.gpus * GPU_MIB
        bound = replay(requests, gpus=args.gpus, fluid=True)
        for mode, name in rows:
            cove = replay(requests, gpus=args.gpus, policy=POLICIES[name], mode=mode)
            ratio = cove.allocated_time / bound.allocated_time
            label = f"{mode}, {name}"
            ratios.setdefault(label, []).append(ratio)
            print(
                f"{label:<28} {seed:>4}  {cove.allocated_time / span:>6.1%}  {bound.allocated_time / span:>6.1%}  "
                f"{ratio:>10.1%}  {cove.refused:>7}  {cove.refused_fragmented:>10}  {cove.stranded:>8}"
            )
    for label, got in ratios.items():
        print(f"mean Cove/bound, {label}: {sum(got) / len(got):.1%}")


if __name__ == "__main__":
    main()
