"""The playground's pure parts: message shaping, snippets, reply stats, errors, and stream merging."""

from __future__ import annotations

import ast
import copy
import json
import shlex
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from playground.chat import (
    NO_MODELS,
    NoModels,
    ReplyStats,
    Sampling,
    interleave,
    message_text,
    snippet,
    to_openai_messages,
)

# ------------------------------------------------------------------------------------------------ messages


def test_history_becomes_openai_messages_with_the_system_prompt_first() -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert to_openai_messages(history, "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]


@pytest.mark.parametrize("system", [None, "", "  \n"])
def test_a_blank_system_prompt_is_left_out(system: str | None) -> None:
    assert to_openai_messages([{"role": "user", "content": "Hi"}], system) == [{"role": "user", "content": "Hi"}]


def test_gradio_content_keeps_text_only_and_drops_file_only_messages() -> None:
    image = {"path": "/tmp/cat.png", "meta": {"_type": "gradio.FileData"}}
    history: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "file", "file": image}]},
        {"role": "user", "content": image},  # a file alone: nothing the gateway can read
        {"role": "user", "content": ("/tmp/cat.png", "a cat")},  # Gradio's older file form
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}, {"type": "text", "text": "Cute."}]},
        {"role": "tool", "content": "ignored"},
    ]
    assert to_openai_messages(history, None) == [
        {"role": "user", "content": "What is this?"},
        {"role": "assistant", "content": "A cat.\nCute."},
    ]


def test_shaping_never_mutates_its_input() -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}], "metadata": None},
        {"role": "assistant", "content": "Hello!", "options": []},
    ]
    before = copy.deepcopy(history)
    messages = to_openai_messages(history, "sys")
    messages[1]["content"] = "changed"
    assert history == before
    assert to_openai_messages((m for m in history), None) == to_openai_messages(history, None)


@pytest.mark.parametrize(
    ("content", "text"),
    [("plain", "plain"), ({"type": "text", "text": "t"}, "t"), ({"type": "file", "file": {}}, ""), (None, "")],
)
def test_message_text(content: object, text: str) -> None:
    assert message_text(content) == text


def test_sampling_params() -> None:
    assert Sampling(0.2, 0.9, 64.0).as_params() == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64}  # type: ignore[arg-type]
    assert Sampling().as_params() == {"temperature": 0.7, "top_p": 1.0, "max_tokens": 512}


# ------------------------------------------------------------------------------------------------ snippets

SECRET = "cove-sk-0123456789abcdef"
BASE = "http://gateway.example:8080/v1"


def test_python_snippet_is_valid_python_with_the_current_settings_and_no_secret() -> None:
    code = snippet(
        base_url=BASE, model="chat", sampling=Sampling(0.3, 0.8, 128), system='Say "hi"\nthen stop.', language="python"
    )
    ast.parse(code)
    for expected in (
        f'base_url="{BASE}"',
        'os.environ["COVE_API_KEY"]',
        'model="chat"',
        '"content": "Say \\"hi\\"\\nthen stop."',
        "temperature=0.3",
        "top_p=0.8",
        "max_tokens=128",
        "stream=True",
    ):
        assert expected in code
    assert SECRET not in code


def test_curl_snippet_sends_the_current_settings_as_json_with_the_key_from_the_environment() -> None:
    code = snippet(base_url=BASE, model="chat", sampling=Sampling(0.3, 0.8, 128), system="It's me.", language="curl")
    words = shlex.split(code.replace("\\\n", " "))
    assert words[:3] == ["curl", "-N", f"{BASE}/chat/completions"]
    assert "Authorization: Bearer $COVE_API_KEY" in words
    body = json.loads(words[words.index("-d") + 1])
    assert body == {
        "model": "chat",
        "messages": [{"role": "system", "content": "It's me."}, {"role": "user", "content": "Hello!"}],
        "temperature": 0.3,
        "top_p": 0.8,
        "max_tokens": 128,
        "stream": True,
    }
    assert SECRET not in code


def test_snippet_without_system_prompt_sends_only_the_user_message() -> None:
    code = snippet(base_url=BASE, model="m", sampling=Sampling(), language="python")
    assert '"system"' not in code
    assert '{"role": "user", "content": "Hello!"}' in code


def test_unknown_snippet_language_is_refused() -> None:
    with pytest.raises(ValueError, match="'ruby'"):
        snippet(base_url=BASE, model="m", sampling=Sampling(), language="ruby")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ stats


def test_stats_use_reported_tokens_and_decode_time() -> None:
    stats = ReplyStats(started=10.0)
    for t in (10.123, 10.2, 10.3):
        stats.add_chunk(t)
    stats.add_usage(12)
    assert stats.ttft_ms == pytest.approx(123)
    assert stats.tokens == 12
    assert stats.tokens_per_s == pytest.approx(11 / 0.177)
    assert stats.summary() == "TTFT 123 ms · 62.1 tokens/s · 12 tokens"


def test_stats_count_chunks_when_no_usage_is_reported() -> None:
    stats = ReplyStats(started=0.0)
    for t in (0.5, 1.0, 1.5):
        stats.add_chunk(t)
    stats.add_usage(None)
    assert stats.summary() == "TTFT 500 ms · 2.0 tokens/s · 3 tokens"


@pytest.mark.parametrize(
    ("chunks", "summary"),
    [([], "0 tokens"), ([0.25], "TTFT 250 ms · 1 token"), ([0.25, 0.25], "TTFT 250 ms · 2 tokens")],
)
def test_stats_leave_out_what_was_not_measured(chunks: list[float], summary: str) -> None:
    stats = ReplyStats(started=0.0)
    for t in chunks:
        stats.add_chunk(t)
    assert stats.summary() == summary


# ------------------------------------------------------------------------------------------------ errors


def test_no_models_message_says_how_to_deploy() -> None:
    assert str(NoModels()) == NO_MODELS
    assert "cove deploy create" in NO_MODELS


# ------------------------------------------------------------------------------------------------ interleave


def test_interleave_yields_every_item_tagged_in_each_streams_order() -> None:
    merged = list(interleave([iter("abc"), iter([1, 2])]))
    assert [item for index, item in merged if index == 0] == ["a", "b", "c"]
    assert [item for index, item in merged if index == 1] == [1, 2]


def test_interleave_passes_items_on_as_they_come() -> None:
    second_may_go = threading.Event()

    def first() -> Iterator[str]:
        yield "first"
        second_may_go.set()

    def second() -> Iterator[str]:
        second_may_go.wait(timeout=10)
        yield "second"

    assert [item for _, item in interleave([second(), first()])] == ["first", "second"]


def test_interleave_reraises_a_failing_stream() -> None:
    def broken() -> Iterator[str]:
        yield "ok"
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        list(interleave([broken()]))
