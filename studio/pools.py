"""Pool capacity and admission: does a request fit, and if not, why and what is free.

One pure function, ``admit``, is used by deploy, fine-tune and the hub. It knows the pool's capacity and quota
and the claims already held; it performs no I/O. GPUs are placed the way the device plugins place them: whole GPUs
take a GPU each; HAMi memory slices are packed first-fit onto GPUs no whole claim holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from studio.models import Resources, Sharing


@dataclass(frozen=True)
class Capacity:
    """What a pool has, and the quota that caps what may be held of it."""

    name: str
    sharing: Sharing = Sharing.NONE
    cpu: float = 0.0
    memory_mib: int = 0
    gpus: int = 0
    gpu_memory_mib: int = 0  # per GPU
    slice_mib: int = 128
    quota_gpus: float | None = None
    quota_cpu: float | None = None
    quota_memory_mib: int | None = None


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


def _gpu_demand(resources: Resources, capacity: Capacity) -> float:
    """GPUs counted against the quota: whole GPUs, or a slice's share of one GPU's memory."""
    if resources.gpus:
        return float(resources.gpus)
    if resources.gpu_memory_mib and capacity.gpu_memory_mib:
        return resources.gpu_memory_mib / capacity.gpu_memory_mib
    return 0.0


def _check_shape(capacity: Capacity, resources: Resources) -> str:
    """Why this pool can never serve these resources, or ''."""
    wants_gpu = resources.gpus or resources.gpu_memory_mib
    if wants_gpu and (capacity.sharing == Sharing.NONE or capacity.gpus == 0):
        return f"pool {capacity.name!r} has no GPUs: ask for CPU only, or pick a GPU pool"
    if resources.gpu_memory_mib:
        if capacity.sharing != Sharing.HAMI:
            return (
                f"pool {capacity.name!r} hands out whole GPUs only: ask for gpus=1, "
                "or pick a pool that shares GPU memory (HAMi)"
            )
        if resources.gpu_memory_mib % capacity.slice_mib:
            return f"GPU memory slices come in multiples of {capacity.slice_mib} MiB in pool {capacity.name!r}"
        if resources.gpu_memory_mib > capacity.gpu_memory_mib:
            return (
                f"a slice of {resources.gpu_memory_mib} MiB exceeds one GPU "
                f"({capacity.gpu_memory_mib} MiB) in pool {capacity.name!r}"
            )
    if resources.gpus > capacity.gpus:
        return f"pool {capacity.name!r} has {capacity.gpus} GPUs per claim at most; {resources.gpus} asked"
    return ""


def _place(capacity: Capacity, claims: Iterable[Claim]) -> tuple[list[int], list[bool], str]:
    """Place claims' GPUs; returns free memory per GPU, which GPUs are whole-held, and the first misfit."""
    memory = [capacity.gpu_memory_mib] * capacity.gpus
    whole = [False] * capacity.gpus
    for claim in claims:
        for _ in range(claim.replicas):
            res = claim.resources
            if res.gpus:
                idle = [i for i in range(capacity.gpus) if not whole[i] and memory[i] == capacity.gpu_memory_mib]
                if len(idle) < res.gpus:
                    return memory, whole, f"{res.gpus} whole GPU{'s' if res.gpus > 1 else ''} for {claim.owner}"
                for i in idle[: res.gpus]:
                    whole[i], memory[i] = True, 0
            elif res.gpu_memory_mib:
                fits = [i for i in range(capacity.gpus) if not whole[i] and memory[i] >= res.gpu_memory_mib]
                if not fits:
                    return memory, whole, f"a {res.gpu_memory_mib} MiB GPU slice for {claim.owner}"
                memory[fits[0]] -= res.gpu_memory_mib
    return memory, whole, ""


def free_of(capacity: Capacity, held: Sequence[Claim]) -> Free:
    """What is left of the pool (within its quota) after ``held``."""
    cpu_cap = min(capacity.cpu, capacity.quota_cpu if capacity.quota_cpu is not None else math.inf)
    mem_cap = min(
        capacity.memory_mib, capacity.quota_memory_mib if capacity.quota_memory_mib is not None else capacity.memory_mib
    )
    cpu = cpu_cap - sum(c.resources.cpu * c.replicas for c in held)
    mem = mem_cap - sum(c.resources.memory_mib * c.replicas for c in held)
    memory, whole, _ = _place(capacity, held)
    idle = sum(1 for i in range(capacity.gpus) if not whole[i] and memory[i] == capacity.gpu_memory_mib)
    if capacity.quota_gpus is not None:
        left = capacity.quota_gpus - sum(_gpu_demand(c.resources, capacity) * c.replicas for c in held)
        idle = min(idle, max(0, math.floor(left + 1e-9)))
    slices = tuple(m for m, w in zip(memory, whole, strict=True) if not w) if capacity.sharing == Sharing.HAMI else ()
    return Free(
        cpu=round(max(cpu, 0.0), 3), memory_mib=max(mem, 0), gpus=idle, gpu_memory_mib=slices, gpu_total=capacity.gpus
    )


def admit(capacity: Capacity, held: Sequence[Claim], request: Claim) -> Admission:
    """Whether ``request`` fits beside ``held`` in the pool, and if not, why and what is free."""
    free = free_of(capacity, held)
    holders = tuple(sorted({c.owner for c in held if c.replicas}))
    res, n = request.resources, request.replicas
    if n == 0:
        return Admission(True, free, holders=holders)
    shape = _check_shape(capacity, res)
    if shape:
        return Admission(False, free, shape, holders)
    held_by = f" (held by {', '.join(holders)})" if holders else ""
    if res.cpu * n > free.cpu + 1e-9:
        return Admission(
            False,
            free,
            f"needs {_num(res.cpu * n)} CPU cores ({n} × {_num(res.cpu)}) but pool {capacity.name!r} has "
            f"{_num(free.cpu)} free{held_by}: ask for less CPU or fewer replicas, or free some",
            holders,
        )
    if res.memory_mib * n > free.memory_mib:
        return Admission(
            False,
            free,
            f"needs {res.memory_mib * n} MiB memory ({n} × {res.memory_mib}) but pool {capacity.name!r} has "
            f"{free.memory_mib} MiB free{held_by}",
            holders,
        )
    if capacity.quota_gpus is not None:
        used = sum(_gpu_demand(c.resources, capacity) * c.replicas for c in held)
        want = _gpu_demand(res, capacity) * n
        if used + want > capacity.quota_gpus + 1e-9:
            return Admission(
                False,
                free,
                f"needs {_num(round(want, 3))} GPUs of quota but pool {capacity.name!r} has "
                f"{_num(round(capacity.quota_gpus - used, 3))} of {_num(capacity.quota_gpus)} left{held_by}",
                holders,
            )
    _, _, misfit = _place(capacity, [*held, request])
    if misfit:
        return Admission(
            False,
            free,
            f"no room for {misfit} in pool {capacity.name!r}: free are {free.describe()}{held_by}",
            holders,
        )
    return Admission(True, free, holders=holders)
