"""The Responses API translated onto chat completions and back, whole and streamed."""

from __future__ import annotations

from typing import Any

import orjson

from studio.gateway.protocol import split_events
from studio.gateway.responses import ResponseStream, check, from_chat, ignored_natively, to_chat, untranslatable

REQUEST = {"model": "m", "instructions": "be brief", "input": "hi", "max_output_tokens": 5, "temperature": 0.5}


def test_a_request_translates_onto_chat_and_what_cannot_is_named() -> None:
    assert to_chat(REQUEST) == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0.5,
    }
    parts = {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}]}]}
    assert to_chat(parts)["messages"] == [{"role": "user", "content": "a"}]
    schema = {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}
    assert to_chat({**REQUEST, "text": {"format": schema}})["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }
    assert untranslatable({**REQUEST, "tools": [], "tool_choice": "auto"}) == ""
    assert untranslatable({**REQUEST, "tools": [{"type": "function", "name": "f"}]}) == "tools"
    assert untranslatable({**REQUEST, "previous_response_id": "resp_1"}) == "previous_response_id"
    assert check({"model": "m"}) == ("'input' is required: a string, or a list of messages", "input")
    assert check(REQUEST) == ("", "")
    assert ignored_natively("transformers", {**REQUEST, "text": {"format": {"type": "json_object"}}}) == "text.format"
    assert ignored_natively("transformers", {**REQUEST, "text": {"format": {"type": "text"}}}) == ""
    assert ignored_natively("vllm", {**REQUEST, "text": {"format": {"type": "json_object"}}}) == ""


def test_a_chat_answer_becomes_a_response() -> None:
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "yo"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5},
    }
    response = from_chat(answer, REQUEST, now=7)
    assert (response["object"], response["status"], response["created_at"]) == ("response", "incomplete", 7)
    assert response["output"][0]["content"] == [{"type": "output_text", "text": "yo", "annotations": []}]
    assert response["usage"]["input_tokens"] == 3
    assert response["usage"]["output_tokens"] == 5
    assert response["usage"]["total_tokens"] == 8


def events_of(data: bytes) -> list[dict[str, Any]]:
    events, rest = split_events(data)
    assert rest == b""
    return [orjson.loads(e.split(b"\ndata: ", 1)[1]) for e in events]


def test_a_chat_stream_becomes_responses_events_in_order() -> None:
    stream = ResponseStream(REQUEST, now=7)
    out = stream.start()
    for piece in ("he", "llo"):
        out += stream.feed(b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]}))
    out += stream.feed(b"data: " + orjson.dumps({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2}}))
    out += stream.feed(b"data: [DONE]")
    out += stream.finish()
    events = events_of(out)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(10))
    assert events[6]["text"] == "hello"
    done = events[-1]["response"]
    assert done["output"][0]["content"][0]["text"] == "hello"
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (2, 2)
    assert events[0]["response"]["usage"] is None


def test_an_error_mid_stream_ends_the_response_as_failed() -> None:
    stream = ResponseStream(REQUEST)
    stream.start()
    error = stream.feed(b'data: {"error": {"message": "broke", "code": 502}}')
    events = events_of(error + stream.finish())
    assert [e["type"] for e in events] == ["error", "response.failed"]
    assert events[0]["message"] == "broke"
