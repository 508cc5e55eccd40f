"""Pool capacity and admission: does a request fit, and if not, why and what is free.

One pure function, ``admit``, is used by deploy, fine-tune and the hub. It knows the pool (``values.PoolBase``: its
capacity and quota) and the claims already held; it performs no I/O. GPUs are placed the way the device plugins
place them: whole GPUs take GPUs nothing touches; a HAMi memory slice goes onto a GPU no whole claim holds, chosen by
a slice policy (best fit by default: the fullest GPU that takes it, so slices gather and GPUs stay whole-free).

A running slice never moves, so a held claim may say where its replicas are (``Claim.on``): those are kept where they
are, and only claims whose place is unknown are placed, then the request. ``admit`` says where the request would go
(``Admission.gpus``) so a backend can put it exactly there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from studio.values import PoolBase, Resources, Sharing


@dataclass(frozen=True)
class Claim:
    """``replicas`` × ``resources`` held (or asked for) by ``owner``.

    ``on``: the GPU indices each placed replica really holds, in replica order (a replica beyond them, e.g. one still
    pending, is placed by admission); None: unknown, every replica is placed by admission. Indices outside the pool
    (a GPU gone since) are ignored."""

    owner: str
    resources: Resources
    replicas: int = 1
    on: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True)
class Free:
    cpu: float
    memory_mib: int
    gpus: int  # GPUs no claim touches
    gpu_memory_mib: tuple[int, ...] = ()  # free memory per GPU, for slices

    gpu_total: int = 0  # GPUs in the pool, so "0 free" can be told apart from "none at all"

    def describe(self) -> str:
        parts = [f"{_num(self.cpu)} CPU cores", f"{self.memory_mib} MiB memory"]
        if self.gpu_total:
            parts.append(f"{self.gpus} of {self.gpu_total} GPUs")
        if self.gpu_memory_mib:
            parts.append(f"largest GPU memory slice {max(self.gpu_memory_mib)} MiB")
        return ", ".join(parts)


@dataclass(frozen=True)
class Admission:
    fits: bool
    free: Free
    reason: str = ""  # why it does not fit, in words a user can act on
    holders: tuple[str, ...] = field(default=())
    gpus: tuple[tuple[int, ...], ...] = ()  # where each replica of the request goes, when it fits and uses GPUs


def _num(value: float) -> str:
    return f"{value:g}"


def _gpu_demand(resources: Resources, pool: PoolBase) -> float:
    """GPUs counted against the quota: whole GPUs, or a slice's share of one GPU's memory."""
    if resources.gpus:
        return float(resources.gpus)
    if resources.gpu_memory_mib and pool.gpu_memory_mib:
        return resources.gpu_memory_mib / pool.gpu_memory_mib
    return 0.0


def _check_shape(pool: PoolBase, resources: Resources) -> str:
    """Why this pool can never serve these resources, or ''."""
    wants_gpu = resources.gpu_devices
    if wants_gpu and (pool.sharing == Sharing.NONE or pool.gpu_count == 0):
        return f"pool {pool.name!r} has no GPUs: ask for CPU only, or pick a GPU pool"
    if resources.gpu_memory_mib:
        if pool.sharing != Sharing.HAMI:
            return (
                f"pool {pool.name!r} hands out whole GPUs only: ask for gpus=1, "
                "or pick a pool that shares GPU memory (HAMi)"
            )
        if resources.gpu_memory_mib % pool.slice_mib:
            return f"GPU memory slices come in multiples of {pool.slice_mib} MiB in pool {pool.name!r}"
        if resources.gpu_memory_mib > pool.gpu_memory_mib:
            return (
                f"a slice of {resources.gpu_memory_mib} MiB exceeds one GPU "
                f"({pool.gpu_memory_mib} MiB) in pool {pool.name!r}"
            )
    if resources.gpus > pool.gpu_count:
        return f"pool {pool.name!r} has {pool.gpu_count} GPUs per claim at most; {resources.gpus} asked"
    return ""


SlicePolicy = Callable[[Sequence[tuple[int, int]], int], int]
"""``policy(candidates, need)``: which GPU a ``need`` MiB slice goes on, from ``candidates`` — (GPU index, free
MiB) of every GPU that takes it, in index order, never empty."""


def first_fit(candidates: Sequence[tuple[int, int]], need: int) -> int:
    """The lowest-numbered GPU that takes the slice."""
    return candidates[0][0]


def best_fit(candidates: Sequence[tuple[int, int]], need: int) -> int:
    """The fullest GPU that takes the slice (lowest index on a tie): slices gather on few GPUs, the rest stay whole."""
    return min(candidates, key=lambda c: (c[1], c[0]))[0]


@dataclass
class _Placed:
    memory: list[int]  # free MiB per GPU
    whole: list[bool]  # held whole
    misfit: str = ""  # the first replica that found no room, in words
    request: list[tuple[int, ...]] = field(default_factory=list)  # where the request's replicas went


def _place(pool: PoolBase, held: Sequence[Claim], request: Claim | None = None, *, policy: SlicePolicy) -> _Placed:
    """Keep held replicas whose GPUs are known where they are; place the others, then ``request``'s, in order."""
    full, count = pool.gpu_memory_mib, pool.gpu_count
    placed = _Placed([full] * count, [False] * count)
    for claim in held:
        for known in (claim.on or ())[: claim.replicas]:
            for i in (i for i in known if 0 <= i < count):
                if claim.resources.gpus:
                    placed.whole[i], placed.memory[i] = True, 0
                else:
                    placed.memory[i] -= claim.resources.gpu_memory_mib
    unknown = [(c, c.replicas - len(c.on or ())) for c in held] + ([(request, request.replicas)] if request else [])
    for claim, replicas in unknown:
        for _ in range(max(replicas, 0)):
            went = _place_one(placed, claim.resources, full, policy)
            if went is None:
                res = claim.resources
                placed.misfit = (
                    f"{res.gpus} whole GPU{'s' if res.gpus > 1 else ''} for {claim.owner}"
                    if res.gpus
                    else f"a {res.gpu_memory_mib} MiB GPU slice for {claim.owner}"
                )
                return placed
            if claim is request:
                placed.request.append(went)
    return placed


def _place_one(placed: _Placed, res: Resources, full: int, policy: SlicePolicy) -> tuple[int, ...] | None:
    """Take one replica's GPUs out of ``placed``: where it went, () when it needs none, None when it finds no room."""
    memory, whole = placed.memory, placed.whole
    if res.gpus:
        idle = [i for i in range(len(memory)) if not whole[i] and memory[i] == full][: res.gpus]
        if len(idle) < res.gpus:
            return None
        for i in idle:
            whole[i], memory[i] = True, 0
        return tuple(idle)
    if res.gpu_memory_mib:
        candidates = [(i, m) for i, m in enumerate(memory) if not whole[i] and m >= res.gpu_memory_mib]
        if not candidates:
            return None
        chosen = policy(candidates, res.gpu_memory_mib)
        memory[chosen] -= res.gpu_memory_mib
        return (chosen,)
    return ()


def place(
    pool: PoolBase, held: Sequence[Claim], request: Claim, *, policy: SlicePolicy = best_fit
) -> tuple[tuple[int, ...], ...] | None:
    """GPU room only (no CPU, memory, quota or shape check): the GPUs (0 … ``pool.gpu_count`` − 1) each replica of
    ``request`` would get beside ``held``, or None when one finds no room. What a backend that picks devices itself
    uses, so that it places as admission does."""
    placed = _place(pool, held, Claim(request.owner, request.resources, request.replicas), policy=policy)
    return None if placed.misfit else tuple(placed.request)


def total(claims: Iterable[Claim]) -> Resources:
    """What claims hold together (replicas × resources, field by field), as one Resources: a sum, not a request,
    so it is not validated (its CPU may be 0)."""
    sums: dict[str, Any] = dict.fromkeys(Resources.model_fields, 0)  # ints stay ints: only the CPU is a float
    for claim in claims:
        for name in sums:
            sums[name] += getattr(claim.resources, name) * claim.replicas
    return Resources.model_construct(**sums)


def free_of(pool: PoolBase, held: Sequence[Claim], *, policy: SlicePolicy = best_fit) -> Free:
    """What is left of the pool (within its quota) after ``held``."""
    cpu_cap = min(pool.cpu_cores, pool.quota_cpu if pool.quota_cpu is not None else math.inf)
    mem_cap = min(pool.memory_mib, pool.quota_memory_mib if pool.quota_memory_mib is not None else pool.memory_mib)
    cpu = cpu_cap - sum(c.resources.cpu * c.replicas for c in held)
    mem = mem_cap - sum(c.resources.memory_mib * c.replicas for c in held)
    placed = _place(pool, held, policy=policy)
    memory, whole = placed.memory, placed.whole
    idle = sum(1 for i in range(pool.gpu_count) if not whole[i] and memory[i] == pool.gpu_memory_mib)
    if pool.quota_gpus is not None:
        left = pool.quota_gpus - sum(_gpu_demand(c.resources, pool) * c.replicas for c in held)
        idle = min(idle, max(0, math.floor(left + 1e-9)))
    slices = (
        tuple(max(m, 0) for m, w in zip(memory, whole, strict=True) if not w) if pool.sharing == Sharing.HAMI else ()
    )
    return Free(
        cpu=round(max(cpu, 0.0), 3), memory_mib=max(mem, 0), gpus=idle, gpu_memory_mib=slices, gpu_total=pool.gpu_count
    )


def admit(pool: PoolBase, held: Sequence[Claim], request: Claim, *, policy: SlicePolicy = best_fit) -> Admission:
    """Whether ``request`` fits beside ``held`` in the pool, and if not, why and what is free; when it fits and uses
    GPUs, ``gpus`` says which each replica gets (its place is ignored: ``request.on`` is not read)."""
    free = free_of(pool, held, policy=policy)
    holders = tuple(sorted({c.owner for c in held if c.replicas}))
    res, n = request.resources, request.replicas
    if n == 0:
        return Admission(True, free, holders=holders)
    shape = _check_shape(pool, res)
    if shape:
        return Admission(False, free, shape, holders)
    held_by = f" (held by {', '.join(holders)})" if holders else ""
    if res.cpu * n > free.cpu + 1e-9:
        return Admission(
            False,
            free,
            f"needs {_num(res.cpu * n)} CPU cores ({n} × {_num(res.cpu)}) but pool {pool.name!r} has "
            f"{_num(free.cpu)} free{held_by}: ask for less CPU or fewer replicas, or free some",
            holders,
        )
    if res.memory_mib * n > free.memory_mib:
        return Admission(
            False,
            free,
            f"needs {res.memory_mib * n} MiB memory ({n} × {res.memory_mib}) but pool {pool.name!r} has "
            f"{free.memory_mib} MiB free{held_by}",
            holders,
        )
    if pool.quota_gpus is not None:
        used = sum(_gpu_demand(c.resources, pool) * c.replicas for c in held)
        want = _gpu_demand(res, pool) * n
        if used + want > pool.quota_gpus + 1e-9:
            return Admission(
                False,
                free,
                f"needs {_num(round(want, 3))} GPUs of quota but pool {pool.name!r} has "
                f"{_num(round(pool.quota_gpus - used, 3))} of {_num(pool.quota_gpus)} left{held_by}",
                holders,
            )
    placed = _place(pool, held, Claim(request.owner, res, n), policy=policy)
    if placed.misfit:
        return Admission(
            False,
            free,
            f"no room for {placed.misfit} in pool {pool.name!r}: free are {free.describe()}{held_by}",
            holders,
        )
    return Admission(True, free, holders=holders, gpus=tuple(placed.request) if res.gpu_devices else ())
