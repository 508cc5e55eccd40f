"""Pool capacity and admission: does a request fit, and if not, why and what is free.

One pure function, ``admit``, is used by deploy, fine-tune and the hub. It knows the pool (``values.PoolBase``: its
capacity and quota) and the claims already held; it performs no I/O. GPUs are placed the way the device plugins
place them: whole GPUs take a GPU each; HAMi memory slices are packed first-fit onto GPUs no whole claim holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from studio.values import PoolBase, Resources, Sharing


@dataclass(frozen=True)
class Claim:
    """``replicas`` × ``resources`` held (or asked for) by ``owner``."""

    owner: str
    resources: Resources
    replicas: int = 1


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


def _place(pool: PoolBase, claims: Iterable[Claim]) -> tuple[list[int], list[bool], str]:
    """Place claims' GPUs; returns free memory per GPU, which GPUs are whole-held, and the first misfit."""
    memory = [pool.gpu_memory_mib] * pool.gpu_count
    whole = [False] * pool.gpu_count
    for claim in claims:
        for _ in range(claim.replicas):
            res = claim.resources
            if res.gpus:
                idle = [i for i in range(pool.gpu_count) if not whole[i] and memory[i] == pool.gpu_memory_mib]
                if len(idle) < res.gpus:
                    return memory, whole, f"{res.gpus} whole GPU{'s' if res.gpus > 1 else ''} for {claim.owner}"
                for i in idle[: res.gpus]:
                    whole[i], memory[i] = True, 0
            elif res.gpu_memory_mib:
                fits = [i for i in range(pool.gpu_count) if not whole[i] and memory[i] >= res.gpu_memory_mib]
                if not fits:
                    return memory, whole, f"a {res.gpu_memory_mib} MiB GPU slice for {claim.owner}"
                memory[fits[0]] -= res.gpu_memory_mib
    return memory, whole, ""


def total(claims: Iterable[Claim]) -> Resources:
    """What claims hold together (replicas × resources, field by field), as one Resources: a sum, not a request,
    so it is not validated (its CPU may be 0)."""
    sums: dict[str, Any] = dict.fromkeys(Resources.model_fields, 0)  # ints stay ints: only the CPU is a float
    for claim in claims:
        for name in sums:
            sums[name] += getattr(claim.resources, name) * claim.replicas
    return Resources.model_construct(**sums)


def free_of(pool: PoolBase, held: Sequence[Claim]) -> Free:
    """What is left of the pool (within its quota) after ``held``."""
    cpu_cap = min(pool.cpu_cores, pool.quota_cpu if pool.quota_cpu is not None else math.inf)
    mem_cap = min(pool.memory_mib, pool.quota_memory_mib if pool.quota_memory_mib is not None else pool.memory_mib)
    cpu = cpu_cap - sum(c.resources.cpu * c.replicas for c in held)
    mem = mem_cap - sum(c.resources.memory_mib * c.replicas for c in held)
    memory, whole, _ = _place(pool, held)
    idle = sum(1 for i in range(pool.gpu_count) if not whole[i] and memory[i] == pool.gpu_memory_mib)
    if pool.quota_gpus is not None:
        left = pool.quota_gpus - sum(_gpu_demand(c.resources, pool) * c.replicas for c in held)
        idle = min(idle, max(0, math.floor(left + 1e-9)))
    slices = tuple(m for m, w in zip(memory, whole, strict=True) if not w) if pool.sharing == Sharing.HAMI else ()
    return Free(
        cpu=round(max(cpu, 0.0), 3), memory_mib=max(mem, 0), gpus=idle, gpu_memory_mib=slices, gpu_total=pool.gpu_count
    )


def admit(pool: PoolBase, held: Sequence[Claim], request: Claim) -> Admission:
    """Whether ``request`` fits beside ``held`` in the pool, and if not, why and what is free."""
    free = free_of(pool, held)
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
    _, _, misfit = _place(pool, [*held, request])
    if misfit:
        return Admission(
            False,
            free,
            f"no room for {misfit} in pool {pool.name!r}: free are {free.describe()}{held_by}",
            holders,
        )
    return Admission(True, free, holders=holders)
