"""The KV figures read from a runtime's start-up log (studio.kvlog), on lines as the runtimes print them."""

from __future__ import annotations

from studio.kvlog import KvFigures, read_figures

# vllm-project/vllm#13596 (V1, 0.8 on): the token count with thousands separators.
VLLM_V1 = [
    "INFO 02-19 23:56:55 kv_cache_utils.py:524] GPU KV cache size: 2,042,016 tokens",
    "INFO 02-19 23:56:55 kv_cache_utils.py:527] Maximum concurrency for 2,048 tokens per request: 997.08x",
]
# vllm-project/vllm#12569 (early V1): blocks, not tokens.
VLLM_BLOCKS = [
    "INFO 01-30 03:19:14 kv_cache_utils.py:395] # GPU blocks: 1381",
    "INFO 01-30 03:19:14 kv_cache_utils.py:398] Maximum concurrency for 2048 tokens per request: 10.79x",
]
# sgl-project/sglang#29575: the scheduler's summary line.
SGLANG = [
    "[2026-06-28 15:16:45] max_total_num_tokens=2086558, chunked_prefill_size=8192, max_prefill_tokens=16384, "
    "max_running_requests=33, context_len=256000, available_gpu_mem=17.22 GB"
]


def test_vllm_v1_reports_tokens_and_concurrency() -> None:
    assert read_figures(VLLM_V1) == KvFigures(kv_cache_tokens=2_042_016, max_concurrency=997.08, context=2048)


def test_older_vllm_counts_blocks_of_its_block_size() -> None:
    assert read_figures(VLLM_BLOCKS) == KvFigures(kv_cache_tokens=1381 * 16, max_concurrency=10.79, context=2048)
    assert read_figures(VLLM_BLOCKS[:1], block_tokens=32) == KvFigures(kv_cache_tokens=1381 * 32)


def test_sglang_reports_tokens_running_requests_and_context() -> None:
    found = read_figures(["[2026-06-28 15:16:40 TP0] KV Cache is allocated. #tokens: 2086558, K size: 1 GB", *SGLANG])
    assert found == KvFigures(
        kv_cache_tokens=2_086_558, context=256_000, max_running_requests=33, max_concurrency=8.15
    )  # 2,086,558 / 256,000: SGLang does not print it, so it is worked out


def test_the_newest_start_wins_and_other_logs_say_nothing() -> None:
    restarted = [*VLLM_BLOCKS, "INFO loading weights", *VLLM_V1]
    found = read_figures(restarted)
    assert found is not None
    assert found.kv_cache_tokens == 2_042_016
    assert read_figures(["INFO:     Uvicorn running on http://127.0.0.1:8000", ""]) is None
    assert read_figures([]) is None


def test_figures_say_themselves_in_words() -> None:
    assert KvFigures(kv_cache_tokens=42_112, max_concurrency=5.14, context=8192).describe() == (
        "42,112 KV tokens, 5.14 requests of 8,192 tokens"
    )
