"""The embedder's request checks and answer shape (``studio.embedder``), without a model."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from studio.embedder import EmbeddingRequest, answer, encode, parse_request
from studio.errors import InvalidSpec, NotFound


def parse(**body: Any) -> EmbeddingRequest:
    return parse_request({"model": "embed"} | body, served="embed", width=4)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("hi", EmbeddingRequest(texts=("hi",))),
        (["a", "b"], EmbeddingRequest(texts=("a", "b"))),
        ([1, 2, 3], EmbeddingRequest(tokens=((1, 2, 3),))),
        ([[1, 2], [3]], EmbeddingRequest(tokens=((1, 2), (3,)))),
    ],
)
def test_input_is_a_string_strings_token_ids_or_lists_of_them(given: Any, expected: EmbeddingRequest) -> None:
    assert parse(input=given) == expected


@pytest.mark.parametrize("given", [None, "", [], [""], ["a", 1], [[1], []], [True], [[1.5]], {"text": "a"}])
def test_any_other_input_is_refused_by_name(given: Any) -> None:
    with pytest.raises(InvalidSpec, match="'input' must be"):
        parse(input=given)


def test_another_models_name_is_not_found() -> None:
    with pytest.raises(NotFound, match="'other' is not served here"):
        parse_request({"model": "other", "input": "a"}, served="embed", width=4)


def test_the_encoding_is_float_or_base64() -> None:
    assert parse(input="a").encoding_format == "float"
    assert parse(input="a", encoding_format="base64").encoding_format == "base64"
    with pytest.raises(InvalidSpec, match="'encoding_format' must be one of float, base64"):
        parse(input="a", encoding_format="int8")


def test_dimensions_are_refused_unless_they_are_the_models_own() -> None:
    assert parse(input="a", dimensions=4) == EmbeddingRequest(texts=("a",))
    with pytest.raises(InvalidSpec, match="'dimensions' is not supported by embed: its vectors have 4 numbers"):
        parse(input="a", dimensions=2)


def test_base64_is_little_endian_float32_as_openai_sends_it() -> None:
    vector = [0.5, -1.0, 0.25]
    assert encode(vector, "float") == vector
    assert struct.unpack("<3f", base64.b64decode(str(encode(vector, "base64")))) == (0.5, -1.0, 0.25)


def test_the_answer_has_one_indexed_embedding_per_input_and_the_prompt_tokens() -> None:
    got = answer([[1.0, 0.0], [0.0, 1.0]], model="embed", prompt_tokens=7, encoding_format="float")
    assert got == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
        ],
        "model": "embed",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
