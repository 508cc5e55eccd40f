"""This machine: its CPUs, memory and NVIDIA GPUs, read once per process (``nvidia-smi`` takes a while, and the
machine does not change under a running Cove)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

import psutil

from studio.values import PoolBase

log = logging.getLogger(__name__)

LOCAL_POOL = "local"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int


@functools.cache
def gpus() -> tuple[Gpu, ...]:
    """NVIDIA GPUs, from nvidia-smi; none when it is absent or fails. Asked once per process."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed, assuming no GPUs: %s", exc)
        return ()
    found = []
    for line in out.strip().splitlines():
        index, name, memory = (part.strip() for part in line.split(","))
        found.append(Gpu(int(index), name, int(float(memory))))
    return tuple(found)


def capacity(devices: tuple[Gpu, ...] | None = None) -> PoolBase:
    """This machine as one pool (``local``): its CPUs, memory and GPUs (``devices``, else those found)."""
    devices = gpus() if devices is None else devices
    return PoolBase(
        name=LOCAL_POOL,
        cpu_cores=float(os.cpu_count() or 1),
        memory_mib=psutil.virtual_memory().total // (1024 * 1024),
        gpu_model=devices[0].name if devices else "",
        gpu_count=len(devices),
        gpu_memory_mib=min((g.memory_mib for g in devices), default=0),
    )
