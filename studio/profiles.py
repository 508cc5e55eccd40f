"""Notebook profiles: what a user may start, one per pool and size, made from the studio's pools. Pure: the hub's
spawner offers them, and the studio's Notebooks page starts servers with them.

A pool serves notebooks when its purpose is ``dev`` (or ``any``) and the user is in one of its groups (a pool
without groups is open to everyone). Sizes: CPU cores on a pool without GPUs; 1, 2, 4, 8 whole GPUs; HAMi memory
slices of 4, 8, 16 … GiB of one GPU. Each profile says what is free now, so a full pool is visible before a click.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from studio.pools import Free
from studio.values import DEFAULT_CLUSTER, PoolBase, Purpose, Resources, Sharing

NOTEBOOK_PURPOSES = {Purpose.DEV, Purpose.ANY}
CPU_SIZES = (1, 2, 4, 8, 16)
GPU_COUNTS = (1, 2, 4, 8)
SLICE_GIB = (4, 8, 16, 24, 32, 48, 80)


@dataclass(frozen=True)
class Profile:
    slug: str
    display_name: str
    description: str
    pool: str
    resources: Resources
    node_selector: dict[str, str] = field(default_factory=dict)  # the pool's placement (Kubernetes)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


def may_use(pool: PoolBase, groups: Iterable[str]) -> bool:
    return not pool.groups or bool(set(pool.groups) & set(groups))


def _sizes(pool: PoolBase) -> list[tuple[str, str, Resources]]:
    """(slug suffix, name, resources) of each size the pool offers."""
    gib = 1024
    if pool.gpu_count == 0:
        cores: list[float] = [n for n in CPU_SIZES if n <= pool.cpu_cores] or [max(pool.cpu_cores, 0.5)]
        return [
            (f"cpu-{n:g}", f"{n:g} core{'s' if n != 1 else ''}", Resources(cpu=n, memory_mib=int(2 * gib * max(n, 1))))
            for n in cores
        ]
    sizes = []
    model = pool.gpu_model or "GPU"
    for n in (n for n in GPU_COUNTS if n <= pool.gpu_count):
        cpu = min(4.0 * n, pool.cpu_cores or 4.0 * n)
        sizes.append((f"gpu-{n}", f"{n}× {model}", Resources(cpu=cpu, memory_mib=16 * gib * n, gpus=n)))
    if pool.sharing == Sharing.HAMI:
        for size in (s for s in SLICE_GIB if s * gib <= pool.gpu_memory_mib):
            sizes.append(
                (
                    f"slice-{size}g",
                    f"{size} GiB slice of {model}",
                    Resources(cpu=min(2.0, pool.cpu_cores or 2.0), memory_mib=8 * gib, gpu_memory_mib=size * gib),
                )
            )
    return sizes


def profiles_for(pools: Sequence[tuple[PoolBase, Free]], groups: Iterable[str]) -> list[Profile]:
    """The profiles a member of ``groups`` may start, pool by pool (in the given order), smallest size first. Only
    pools of the hub's own cluster (``default``) serve notebooks."""
    groups = list(groups)
    found = []
    for pool, free in pools:
        if pool.purpose not in NOTEBOOK_PURPOSES or not may_use(pool, groups) or pool.cluster != DEFAULT_CLUSTER:
            continue
        for suffix, name, resources in _sizes(pool):
            found.append(
                Profile(
                    slug=f"{pool.name}-{suffix}",
                    display_name=f"{pool.purpose} · {name}" if pool.purpose != Purpose.ANY else f"{pool.name} · {name}",
                    description=f"pool {pool.name}; free now: {free.describe()}",
                    pool=pool.name,
                    resources=resources,
                    node_selector=dict(pool.node_selector),
                    tolerations=[dict(t) for t in pool.tolerations],
                )
            )
    return found
