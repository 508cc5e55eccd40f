"""The pure parts of the gateway's compatibility with benchmark clients: request adaptation per runtime, the latency
buckets, the bisecting histogram, and token counting with an injected tokenizer."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from studio.gateway.counting import TokenCounter, prompt_tokens
from studio.gateway.metrics import LATENCY_BUCKETS, FastHistogram
from studio.gateway.protocol import adapt_request

GUIDELLM = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    "max_tokens": 16,
    "stop": None,
    "ignore_eos": True,
}


@pytest.mark.parametrize("runtime", ["vllm", "sglang", "custom", "triton"])
def test_runtimes_that_know_the_fields_get_the_body_as_sent(runtime: str) -> None:
    adapted = adapt_request(runtime, "chat.completions", GUIDELLM)
    assert adapted.body is GUIDELLM
    assert (adapted.dropped, adapted.translated, adapted.headers()) == ((), (), [])


def test_transformers_gets_only_what_it_accepts_and_the_client_is_told() -> None:
    body = {**GUIDELLM, "min_tokens": 4, "top_k": 5, "repetition_penalty": 1.2}
    adapted = adapt_request("transformers", "chat.completions", body)
    assert adapted.body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 16,
        "stop": None,
        "frequency_penalty": pytest.approx(0.2),
    }
    assert adapted.dropped == ("ignore_eos", "min_tokens", "top_k", "stream_options.continuous_usage_stats")
    assert adapted.translated == ("repetition_penalty",)
    assert dict(adapted.headers()) == {
        b"x-cove-dropped-fields": b"ignore_eos,min_tokens,top_k,stream_options.continuous_usage_stats",
        b"x-cove-translated-fields": b"repetition_penalty",
    }
    assert body["stream_options"]["continuous_usage_stats"] is True  # the input is not changed


def test_vllm_bench_completions_to_transformers_keep_their_penalty_and_logprobs() -> None:
    body = {"model": "m", "prompt": "x", "repetition_penalty": 1.0, "max_tokens": 4, "logprobs": None}
    adapted = adapt_request("transformers", "completions", {**body, "frequency_penalty": 0.5})
    assert adapted.body == {"model": "m", "prompt": "x", "max_tokens": 4, "logprobs": None, "frequency_penalty": 0.5}
    assert adapted.dropped == ("repetition_penalty",)  # a penalty was given already: nothing to translate into


def test_latency_buckets_grow_by_a_quarter_from_5ms_past_60s() -> None:
    assert LATENCY_BUCKETS[0] == 0.005
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BUCKETS) if b <= 60]
    assert all(1.2 < r < 1.3 for r in ratios)
    assert any(60 <= b < 80 for b in LATENCY_BUCKETS)


def test_fast_histogram_exports_cumulative_buckets_with_le_inclusive() -> None:
    registry = CollectorRegistry()
    histogram = FastHistogram("t_seconds", "test", ["d"], (0.1, 1.0))
    registry.register(histogram)
    histogram.observe(("a",), 0.1)
    histogram.observe_many(("a",), [0.5, 2.0])
    text = generate_latest(registry).decode()
    assert 't_seconds_bucket{d="a",le="0.1"} 1.0' in text
    assert 't_seconds_bucket{d="a",le="1.0"} 2.0' in text
    assert 't_seconds_bucket{d="a",le="+Inf"} 3.0' in text
    assert 't_seconds_count{d="a"} 3.0' in text
    assert histogram.count(("a",)) == 3


class WordTokenizer:
    """One token a word; the chat template puts a word before each message and the generation prompt's word last."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> list[int]:
        words = sum(1 + len(m["content"].split()) for m in conversation)
        return list(range(words + (1 if kwargs.get("add_generation_prompt") else 0)))

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        return list(range(len(text.split()) + (0 if kwargs.get("add_special_tokens") is False else 1)))


def test_prompts_are_counted_with_the_template_or_as_the_runtime_encodes_them() -> None:
    tokenizer = WordTokenizer()
    assert prompt_tokens(tokenizer, {"messages": [{"role": "user", "content": "one two"}]}) == 4
    assert prompt_tokens(tokenizer, {"prompt": "one two"}) == 3
    assert prompt_tokens(tokenizer, {"prompt": [1, 2, 3]}) == 3


def test_the_tokenizer_is_loaded_once_per_deployment_and_a_missing_one_is_remembered() -> None:
    loads: list[str] = []

    def loader(folder: str) -> WordTokenizer | None:
        loads.append(folder)
        return WordTokenizer() if folder == "/models/a" else None

    async def scenario() -> list[tuple[int, int] | None]:
        counter = TokenCounter(loader)
        body = {"messages": [{"role": "user", "content": "hi"}]}
        return [
            *await asyncio.gather(*(counter.count("a", "/models/a", body, "two words") for _ in range(3))),
            await counter.count("b", "/nowhere", body, "x"),
            await counter.count("b", "/nowhere", body, "x"),
            await counter.count("c", "", body, "x"),
        ]

    assert asyncio.run(scenario()) == [(3, 2), (3, 2), (3, 2), None, None, None]
    assert loads == ["/models/a", "/nowhere"]
