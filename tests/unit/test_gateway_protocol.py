"""The OpenAI wire format at the gateway: request checks, error bodies, usage, and SSE metering."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from studio.gateway.protocol import (
    DONE,
    Adapted,
    FanIn,
    StreamMeter,
    adapt_request,
    check_request,
    estimate_prompt_tokens,
    merge_choices,
    split_events,
    upstream_error,
    usage_of,
)

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}
COMPLETION = {"model": "chat", "prompt": "Once upon a time"}


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj)


def chunk(**fields: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "Qwen/Qwen2.5-0.5B-Instruct@abc", **fields}


# ------------------------------------------------------------------------------------------------ check_request


@pytest.mark.parametrize(
    ("body", "endpoint", "message"),
    [
        ([CHAT], "chat.completions", "the request body must be a JSON object"),
        ("hello", "completions", "the request body must be a JSON object"),
        (
            {"messages": CHAT["messages"]},
            "chat.completions",
            "'model' is required: the name of a deployment (see GET /v1/models)",
        ),
        (
            {**CHAT, "model": ""},
            "chat.completions",
            "'model' is required: the name of a deployment (see GET /v1/models)",
        ),
        (
            {**CHAT, "model": 7},
            "chat.completions",
            "'model' is required: the name of a deployment (see GET /v1/models)",
        ),
        ({"model": "chat"}, "chat.completions", "'messages' must be a non-empty list of {role, content} objects"),
        (
            {"model": "chat", "messages": []},
            "chat.completions",
            "'messages' must be a non-empty list of {role, content} objects",
        ),
        (
            {"model": "chat", "messages": "Hi"},
            "chat.completions",
            "'messages' must be a non-empty list of {role, content} objects",
        ),
        ({"model": "chat", "messages": ["Hi"]}, "chat.completions", "messages[0] must be an object with a 'role'"),
        (
            {"model": "chat", "messages": [{"role": "user", "content": "a"}, {"content": "b"}]},
            "chat.completions",
            "messages[1] must be an object with a 'role'",
        ),
        (
            {"model": "chat", "messages": [{"role": "user", "content": 5}]},
            "chat.completions",
            "messages[0].content must be a string or a list of parts",
        ),
        ({"model": "chat"}, "completions", "'prompt' is required: a string (or a list of strings)"),
        ({"model": "chat", "prompt": ""}, "completions", "'prompt' is required: a string (or a list of strings)"),
        ({"model": "chat", "prompt": []}, "completions", "'prompt' is required: a string (or a list of strings)"),
        ({"model": "chat", "prompt": 42}, "completions", "'prompt' is required: a string (or a list of strings)"),
        ({**CHAT, "stream": "yes"}, "chat.completions", "'stream' must be true or false"),
        ({**COMPLETION, "stream": 1}, "completions", "'stream' must be true or false"),
        ({**CHAT, "max_tokens": 0}, "chat.completions", "'max_tokens' must be a positive integer"),
        ({**CHAT, "max_tokens": -5}, "chat.completions", "'max_tokens' must be a positive integer"),
        ({**CHAT, "max_tokens": "10"}, "chat.completions", "'max_tokens' must be a positive integer"),
        ({**CHAT, "max_tokens": 1.5}, "chat.completions", "'max_tokens' must be a positive integer"),
        ({**CHAT, "max_tokens": True}, "chat.completions", "'max_tokens' must be a positive integer"),
        (
            {**CHAT, "max_completion_tokens": 0},
            "chat.completions",
            "'max_completion_tokens' must be a positive integer",
        ),
        ({**COMPLETION, "n": 0}, "completions", "'n' must be a positive integer"),
        ({**CHAT, "temperature": 2.5}, "chat.completions", "'temperature' must be a number from 0 to 2"),
        ({**CHAT, "temperature": -0.1}, "chat.completions", "'temperature' must be a number from 0 to 2"),
        ({**CHAT, "temperature": "0.5"}, "chat.completions", "'temperature' must be a number from 0 to 2"),
        ({**COMPLETION, "top_p": 1.5}, "completions", "'top_p' must be a number from 0 to 1"),
    ],
)
def test_malformed_bodies_get_a_message_that_says_what_to_fix(body: Any, endpoint: str, message: str) -> None:
    assert check_request(body, endpoint) == message


@pytest.mark.parametrize(
    ("body", "endpoint"),
    [
        (CHAT, "chat.completions"),
        (
            {
                "model": "chat",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                    {"role": "assistant", "content": None, "tool_calls": []},
                ],
                "stream": True,
                "max_tokens": 1,
                "max_completion_tokens": 64,
                "n": 1,
                "temperature": 0,
                "top_p": 1,
            },
            "chat.completions",
        ),
        ({**CHAT, "temperature": 2, "top_p": 0.0, "stream": False}, "chat.completions"),
        (COMPLETION, "completions"),
        ({"model": "chat", "prompt": ["one", "two"], "max_tokens": 16, "temperature": 0.7}, "completions"),
    ],
)
def test_valid_bodies_pass(body: dict[str, Any], endpoint: str) -> None:
    assert check_request(body, endpoint) == ""


@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_a_boolean_sampling_parameter_is_refused(field: str) -> None:
    assert check_request({**CHAT, field: True}, "chat.completions") != ""


def test_a_completions_body_is_not_checked_for_messages() -> None:
    assert check_request(COMPLETION, "completions") == ""
    assert check_request(CHAT, "completions") == "'prompt' is required: a string (or a list of strings)"


# ------------------------------------------------------------------------------------------------ StreamMeter


def test_a_content_chunk_is_forwarded_with_the_deployment_name_and_counted() -> None:
    meter = StreamMeter("chat", client_wants_usage=False)

    out = meter.process(sse(chunk(choices=[{"index": 0, "delta": {"content": "Hel"}}])))

    assert out == sse({**chunk(choices=[{"index": 0, "delta": {"content": "Hel"}}]), "model": "chat"}) + b"\n\n"
    assert (meter.content_chunks, meter.started, meter.reported, meter.done) == (1, True, False, False)


def test_the_usage_chunk_is_kept_and_hidden_from_a_client_that_did_not_ask() -> None:
    meter = StreamMeter("chat", client_wants_usage=False)

    out = meter.process(sse(chunk(choices=[], usage={"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19})))

    assert out is None
    assert (meter.prompt_tokens, meter.completion_tokens, meter.reported) == (12, 7, True)
    assert meter.started is False


def test_usage_riding_on_a_content_chunk_is_removed_for_a_client_that_did_not_ask() -> None:
    meter = StreamMeter("chat", client_wants_usage=False)
    choices = [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}]

    out = meter.process(sse(chunk(choices=choices, usage={"prompt_tokens": 3, "completion_tokens": 4})))

    assert out == sse({**chunk(choices=choices), "model": "chat"}) + b"\n\n"
    assert (meter.prompt_tokens, meter.completion_tokens, meter.content_chunks) == (3, 4, 1)


def test_the_usage_chunk_reaches_a_client_that_asked_for_it_under_the_deployment_name() -> None:
    meter = StreamMeter("chat", client_wants_usage=True)
    usage = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}

    out = meter.process(sse(chunk(choices=[], usage=usage)))

    assert out == sse({**chunk(choices=[], usage=usage), "model": "chat"}) + b"\n\n"
    assert (meter.prompt_tokens, meter.completion_tokens, meter.reported) == (12, 7, True)


def test_a_null_usage_field_is_not_taken_as_reported_usage() -> None:
    meter = StreamMeter("chat", client_wants_usage=False)

    meter.process(sse(chunk(choices=[{"index": 0, "delta": {"content": "a"}}], usage=None)))

    assert (meter.prompt_tokens, meter.completion_tokens, meter.reported) == (0, 0, False)


@pytest.mark.parametrize(
    ("choices", "counted"),
    [
        ([{"index": 0, "delta": {"role": "assistant", "content": ""}}], 0),
        ([{"index": 0, "delta": {}, "finish_reason": "stop"}], 0),
        ([{"index": 0, "delta": {"reasoning_content": "thinking"}}], 1),
        ([{"index": 0, "text": "Once"}], 1),  # /v1/completions
        ([{"index": 0, "text": ""}], 0),
        ([{"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {"content": "b"}}], 2),
    ],
    ids=["role-only", "finish", "reasoning", "completions-text", "empty-text", "two-choices"],
)
def test_only_chunks_that_carry_text_count_as_content(choices: list[dict[str, Any]], counted: int) -> None:
    meter = StreamMeter("chat", client_wants_usage=False)

    meter.process(sse(chunk(choices=choices)))

    assert meter.content_chunks == counted


@pytest.mark.parametrize("event", [b"data: [DONE]", b"data:[DONE]", b"data: [DONE]  "])
def test_done_is_passed_through_and_remembered(event: bytes) -> None:
    meter = StreamMeter("chat", client_wants_usage=False)

    assert meter.process(event) == DONE == b"data: [DONE]\n\n"
    assert meter.done is True


@pytest.mark.parametrize("event", [b": keep-alive", b"event: ping", b"id: 7", b"data: not json", b"data: [1, 2]"])
def test_other_lines_and_data_that_is_not_a_json_object_pass_unchanged(event: bytes) -> None:
    meter = StreamMeter("chat", client_wants_usage=False)

    assert meter.process(event) == event + b"\n\n"
    assert (meter.content_chunks, meter.done, meter.reported) == (0, False, False)


def test_a_whole_stream_is_metered_and_reshaped() -> None:
    meter = StreamMeter("chat", client_wants_usage=False)
    events = [
        sse(chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}])),
        sse(chunk(choices=[{"index": 0, "delta": {"content": "Hi"}}])),
        sse(chunk(choices=[{"index": 0, "delta": {"content": " there"}}])),
        sse(chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])),
        sse(chunk(choices=[], usage={"prompt_tokens": 9, "completion_tokens": 2})),
        b"data: [DONE]",
    ]

    out = [meter.process(e) for e in events]

    assert [orjson.loads(o[6:])["model"] for o in out[:4] if o is not None] == ["chat"] * 4
    assert out[4:] == [None, DONE]
    assert (meter.content_chunks, meter.prompt_tokens, meter.completion_tokens, meter.done) == (2, 9, 2, True)


# ------------------------------------------------------------------------------------------------ split_events


@pytest.mark.parametrize(
    ("buffer", "events", "rest"),
    [
        (b"", [], b""),
        (b"data: a", [], b"data: a"),
        (b"data: a\n\ndata: b\n\ndata: c", [b"data: a", b"data: b"], b"data: c"),
        (b"data: a\n\n", [b"data: a"], b""),
        (b"\n\n\n\ndata: a\n\n", [b"data: a"], b""),
        (b"data: a\r\n\r\ndata: b\r\n", [b"data: a"], b"data: b\n"),
        (b": ping\n\ndata: a\n", [b": ping"], b"data: a\n"),
    ],
)
def test_split_events_returns_complete_events_and_keeps_the_incomplete_tail(
    buffer: bytes, events: list[bytes], rest: bytes
) -> None:
    assert split_events(buffer) == (events, rest)


def test_events_split_across_reads_come_out_whole() -> None:
    reads = [b'data: {"a"', b": 1}\r", b"\n\r\ndata: [DO", b"NE]\r\n", b"\r\n"]
    seen: list[bytes] = []
    rest = b""

    for read in reads:
        events, rest = split_events(rest + read)
        seen += events

    assert (seen, rest) == ([b'data: {"a": 1}', b"data: [DONE]"], b"")


# ------------------------------------------------------------------------------------------------ upstream_error


def error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"detail": "max_tokens is too large"}', error("max_tokens is too large", "invalid_request_error", 400)),
        (404, b'{"detail": "model not found"}', error("model not found", "invalid_request_error", 404)),
        (
            422,
            b'{"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}',
            error('[{"loc":["body","messages"],"msg":"field required"}]', "invalid_request_error", 422),
        ),
        (500, b"Internal Server Error", error("Internal Server Error", "upstream_error", 500)),
        (503, b'{"detail": "loading"}', error("loading", "upstream_error", 503)),
        (502, b"", error("the model server answered 502", "upstream_error", 502)),
        (500, b'{"error": "CUDA out of memory"}', error('{"error": "CUDA out of memory"}', "upstream_error", 500)),
        (500, b"bad \xff byte", error("bad \ufffd byte", "upstream_error", 500)),
    ],
    ids=["detail-400", "detail-404", "detail-list", "text-500", "detail-503", "empty", "error-string", "not-utf8"],
)
def test_runtime_errors_are_reshaped_as_openai_errors(status: int, body: bytes, expected: dict[str, Any]) -> None:
    assert orjson.loads(upstream_error(status, body)) == expected


def test_a_long_plain_text_error_is_cut_to_1000_characters() -> None:
    got = orjson.loads(upstream_error(500, b"x" * 5000))

    assert got == error("x" * 1000, "upstream_error", 500)


def test_an_error_already_in_openai_shape_passes_unchanged() -> None:
    body = b'{"error": {"message": "context too long", "type": "BadRequestError", "param": null, "code": 400}}'

    assert upstream_error(400, body) == body


# ------------------------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"messages": [{"role": "user", "content": "12345678"}]}, 2),
        ({"messages": [{"role": "user", "content": "123456789"}]}, 3),
        ({"messages": [{"role": "user", "content": "1234"}, {"role": "assistant", "content": "123"}]}, 2),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "12345678"}]}]}, 2),
        ({"messages": [{"role": "assistant", "content": None}, "junk"]}, 0),
        ({"prompt": "abcd"}, 1),
        ({"prompt": ["abcd", "efgh"]}, 3),  # "abcd efgh"
        ({"prompt": ""}, 0),
        ({}, 0),
    ],
)
def test_prompt_tokens_are_estimated_at_four_characters_a_token(body: dict[str, Any], tokens: int) -> None:
    assert estimate_prompt_tokens(body) == tokens


@pytest.mark.parametrize(
    ("obj", "usage"),
    [
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}, (3, 5)),
        ({"usage": {"prompt_tokens": 3, "completion_tokens": None}}, (3, 0)),
        ({"usage": {"total_tokens": 8}}, (0, 0)),
        ({"usage": None}, None),
        ({"choices": []}, None),
        ([{"usage": {"prompt_tokens": 1}}], None),
        ("usage", None),
    ],
)
def test_usage_of_reads_prompt_and_completion_tokens(obj: Any, usage: tuple[int, int] | None) -> None:
    assert usage_of(obj) == usage


# ------------------------------------------------------------------------------------------------ ignored parameters


def test_parameters_a_runtime_would_ignore_are_fanned_out_or_refused_by_name() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    fanned = adapt_request("transformers", "chat.completions", {**chat, "n": 3, "seed": 7})
    assert (fanned.fan_out, fanned.emulated, fanned.refusal) == (3, ("n",), "")
    assert [c["seed"] for c in fanned.copies()] == [7, 8, 9]  # drawn apart, as one request's n choices are
    assert all("n" not in c for c in fanned.copies())
    assert (b"x-cove-emulated-fields", b"n") in fanned.headers()
    for field, value in (("logprobs", True), ("top_logprobs", 2), ("response_format", {"type": "json_object"})):
        refused = adapt_request("transformers", "chat.completions", {**chat, field: value})
        assert refused.param == field
        assert refused.refusal.startswith(f"'{field}' is not supported by this deployment's runtime (transformers)")
    # values that ask for nothing are the same answer honoured or not: sent as they are
    quiet = {**chat, "n": 1, "logprobs": False, "response_format": {"type": "text"}, "presence_penalty": 0}
    assert adapt_request("transformers", "chat.completions", quiet) == Adapted(quiet)
    # a completions request's logprobs=0 still asks for the sampled token's logprob
    assert (
        adapt_request("transformers", "completions", {"model": "m", "prompt": "a", "logprobs": 0}).param == "logprobs"
    )
    asked = {**chat, "n": 2, "logprobs": True, "top_logprobs": 2, "response_format": {"type": "json_object"}}
    assert adapt_request("vllm", "chat.completions", asked) == Adapted(asked)  # vLLM honours them all
    triton = adapt_request("triton", "chat.completions", {**chat, "n": 2})
    assert triton.fan_out == 2
    assert adapt_request("transformers", "chat.completions", {**chat, "n": 17}).param == "n"


def test_answers_to_copies_merge_into_n_choices_with_usage_summed() -> None:
    def answer(text: str) -> dict[str, Any]:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return {"id": text, "model": "m", "choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}

    merged = merge_choices([answer("a"), answer("b")])
    assert merged["id"] == "a"
    assert [(c["index"], c["message"]["content"]) for c in merged["choices"]] == [(0, "a"), (1, "b")]
    assert merged["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_streams_of_copies_interleave_with_their_choice_index_and_one_usage() -> None:
    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(obj)

    def chunk(text: str, **extra: Any) -> bytes:
        return event({"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"content": text}}], **extra})

    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    fan = FanIn()
    out = fan.feed(1, [chunk("b")]) + fan.feed(0, [chunk("a", usage=usage), b"data: [DONE]"])
    out += fan.feed(1, [event({"id": "x", "model": "m", "choices": [], "usage": usage}), b": keep-alive"])
    out += fan.finish()
    events, rest = split_events(out)
    assert rest == b""
    assert events[-1] == b"data: [DONE]"
    objs = [orjson.loads(e[6:]) for e in events[:-1]]
    assert [(o["choices"][0]["index"], o["choices"][0]["delta"]["content"]) for o in objs[:2]] == [(1, "b"), (0, "a")]
    assert "usage" not in objs[1]
    assert objs[2] == {
        "id": "x",
        "model": "m",
        "choices": [],
        "usage": {**usage, "prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }
