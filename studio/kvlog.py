"""What a GPU runtime says of its KV cache when it starts, read from its log: the figures to set beside the memory
plan's prediction (``studio.memplan``).

Pure: log lines in, ``KvFigures`` (or None when no line says) out. The lines read:

- vLLM (V1, since 0.8): ``GPU KV cache size: 2,042,016 tokens`` and
  ``Maximum concurrency for 2,048 tokens per request: 997.08x``;
- vLLM (V0 and early V1): ``# GPU blocks: 1381`` (× the block size, 16 unless ``--block-size`` says) with the same
  concurrency line, its numbers without thousands separators;
- SGLang: ``KV Cache is allocated. #tokens: N, K size: …`` and the scheduler's
  ``max_total_num_tokens=N, chunked_prefill_size=…, max_running_requests=M, context_len=C, …``.

The last figure of each kind wins: a restarted replica's log holds every start, and the newest is the one running.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

VLLM_BLOCK_TOKENS = 16  # vLLM's default --block-size, for logs that count blocks


class KvFigures(BaseModel):
    """The KV cache a running replica reports: tokens it holds, and how many requests of ``context`` tokens fit."""

    model_config = ConfigDict(frozen=True)

    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None  # requests of ``context`` tokens the cache holds at once
    context: int | None = None  # the runtime's maximum tokens per request
    max_running_requests: int | None = None  # SGLang: the batch it will run at most

    def describe(self) -> str:
        parts = []
        if self.kv_cache_tokens is not None:
            parts.append(f"{self.kv_cache_tokens:,} KV tokens")
        if self.max_concurrency is not None and self.context:
            parts.append(f"{self.max_concurrency:g} requests of {self.context:,} tokens")
        elif self.context:
            parts.append(f"context {self.context:,}")
        if self.max_running_requests is not None:
            parts.append(f"at most {self.max_running_requests} running")
        return ", ".join(parts)


def _int(text: str) -> int:
    return int(text.replace(",", ""))


_VLLM_TOKENS = re.compile(r"GPU KV cache size: ([\d,]+) tokens")
_VLLM_BLOCKS = re.compile(r"# GPU blocks: (\d+)")
_VLLM_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_SGLANG_ALLOCATED = re.compile(r"KV Cache is allocated\. #tokens: (\d+)")
_SGLANG_TOTAL = re.compile(r"max_total_num_tokens=(\d+)")
_SGLANG_RUNNING = re.compile(r"max_running_requests=(\d+)")
_SGLANG_CONTEXT = re.compile(r"context_len=(\d+)")


def read_figures(lines: Iterable[str], *, block_tokens: int = VLLM_BLOCK_TOKENS) -> KvFigures | None:
    """The KV figures the log's lines report, or None when none does (not a vLLM or SGLang log, or one cut before
    the cache was allocated). ``block_tokens``: vLLM's block size, for its older lines that count blocks."""
    found: dict[str, int | float] = {}
    for line in lines:
        if m := _VLLM_TOKENS.search(line):
            found["kv_cache_tokens"] = _int(m[1])
        elif m := _VLLM_BLOCKS.search(line):
            found["kv_cache_tokens"] = int(m[1]) * block_tokens
        elif m := _VLLM_CONCURRENCY.search(line):
            found["context"], found["max_concurrency"] = _int(m[1]), float(m[2])
        elif m := _SGLANG_ALLOCATED.search(line):
            found["kv_cache_tokens"] = int(m[1])
        elif m := _SGLANG_TOTAL.search(line):
            found["kv_cache_tokens"] = int(m[1])
            if running := _SGLANG_RUNNING.search(line):
                found["max_running_requests"] = int(running[1])
            if context := _SGLANG_CONTEXT.search(line):
                found["context"] = int(context[1])
    if not found:
        return None
    if "max_concurrency" not in found and found.get("kv_cache_tokens") and found.get("context"):
        found["max_concurrency"] = round(found["kv_cache_tokens"] / found["context"], 2)  # SGLang does not say it
    return KvFigures.model_validate(found)
