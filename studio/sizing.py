"""Sizing a GPU deployment by its memory plan (``studio.memplan``): the hardware a pool's claim gives, the context
and memory settings its runtime args ask, the plan's flags to add where the args are silent, and, when one request
does not fit, what in the pool would hold one.

Pure: a model's ``Shape``, a pool, a claim's ``Resources`` and runtime args in; hardware, flags and words out.
"""

from __future__ import annotations

from collections.abc import Sequence

from studio.memplan import PLANNED_RUNTIMES, UNKNOWN_MAX_CONTEXT, Hardware, Plan, Shape, plan
from studio.runtimes import GPU_MEMORY_FRACTION
from studio.values import PoolBase, Resources, RuntimeKind, Sharing

CONTEXT_FLAGS = {RuntimeKind.VLLM: "--max-model-len", RuntimeKind.SGLANG: "--context-length"}
# The deploy form's default context: the model's maximum, but no more than this (a 128k default would size every
# deployment for one request nobody sends, and refuse GPUs that serve the common case well).
DEFAULT_CONTEXT_CAP = 32768


def arg_value(args: Sequence[str], flag: str) -> str | None:
    """The value ``args`` give ``flag`` (``--flag V`` or ``--flag=V``; the last one wins), or None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def planned(runtime: RuntimeKind | str, resources: Resources) -> bool:
    """Whether a deployment of ``runtime`` asking ``resources`` is sized by a memory plan: a GPU runtime on GPUs."""
    return runtime in PLANNED_RUNTIMES and resources.gpu_devices > 0


def default_context(shape: Shape) -> int:
    """The model's maximum context (vLLM's 2048 when config.json names none), at most ``DEFAULT_CONTEXT_CAP``."""
    return min(shape.max_context or UNKNOWN_MAX_CONTEXT, DEFAULT_CONTEXT_CAP)


def hardware_for(
    pool: PoolBase,
    resources: Resources,
    *,
    runtime: RuntimeKind,
    args: Sequence[str] = (),
    context: int | None = None,
    concurrency: int | None = None,
) -> Hardware | None:
    """The plan's hardware for one replica: its whole GPUs of the pool's kind, or its HAMi slice, with the memory
    fraction, KV-cache dtype and context its args set (``context`` when they set none). None when the pool does
    not say how much memory its GPUs have (nothing to plan against)."""
    memory = resources.gpu_memory_mib or pool.gpu_memory_mib
    if not memory:
        return None
    fraction = arg_value(args, GPU_MEMORY_FRACTION[runtime][0])
    kv_dtype = arg_value(args, "--kv-cache-dtype") or "auto"
    asked_context = arg_value(args, CONTEXT_FLAGS[runtime])
    return Hardware(
        gpu_memory_mib=memory,
        gpus=resources.gpus or 1,
        runtime=runtime,
        memory_fraction=float(fraction) if fraction else None,
        kv_cache_dtype="fp8" if kv_dtype.startswith("fp8") else "auto",
        context=int(asked_context) if asked_context else context,
        concurrency=concurrency,
    )


def with_flags(args: Sequence[str], flags: Sequence[str]) -> list[str]:
    """``args`` and, after them, each of the plan's ``--flag value`` pairs whose flag ``args`` do not set: what the
    user wrote always wins."""
    added = list(args)
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        if arg_value(args, flag) is None and flag not in args:
            added += [flag, value]
    return added


def _gib(mib: int) -> str:
    return f"{mib / 1024:g} GiB"


def context_words(tokens: int) -> str:
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else f"{tokens:,}-token"


def what_fits(shape: Shape, pool: PoolBase, hardware: Hardware) -> str:
    """What of ``pool`` holds one request at ``hardware``'s context: the fewest whole GPUs, and on a HAMi pool the
    smallest slice, in words ("needs 2 GPUs of 80 GiB or a 24 GiB slice at 8k context"), or that nothing does."""
    context = hardware.context or shape.max_context or 0
    one = hardware.model_copy(update={"concurrency": None, "context": context})
    options = []
    if pool.gpu_memory_mib:
        for n in range(1, pool.gpu_count + 1):
            whole = one.model_copy(update={"gpus": n, "gpu_memory_mib": pool.gpu_memory_mib})
            if plan(shape, whole).fits:
                options.append(f"{n} GPU{'s' if n > 1 else ''} of {_gib(pool.gpu_memory_mib)}")
                break
    if pool.sharing == Sharing.HAMI and pool.gpu_memory_mib:
        sizes = range(pool.slice_mib, pool.gpu_memory_mib + 1, pool.slice_mib)
        low, high = 0, len(sizes)  # plans fit from some slice size up: bisect for the smallest
        while low < high:
            mid = (low + high) // 2
            if plan(shape, one.model_copy(update={"gpus": 1, "gpu_memory_mib": sizes[mid]})).fits:
                high = mid
            else:
                low = mid + 1
        if low < len(sizes):
            options.append(f"a {_gib(sizes[low])} slice")
    at = f"at {context_words(context)} context"
    if not options:
        return f"nothing in pool {pool.name!r} holds one request {at}: ask for a shorter context"
    return f"needs {' or '.join(options)} {at}"


def one_request(shape: Shape, hardware: Hardware) -> Plan:
    """The plan asked only to hold one request at the context (admission's question)."""
    return plan(shape, hardware.model_copy(update={"concurrency": None}))
