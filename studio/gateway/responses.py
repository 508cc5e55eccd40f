"""OpenAI's Responses API (``POST /v1/responses``) for runtimes that serve only chat completions: a request translated
onto chat completions, and the answer back, whole or as Responses stream events.

Everything here is pure. What translates: ``input`` (a string, or a list of messages whose content is a string or
``input_text``/``output_text`` parts), ``instructions`` (a system message first), ``max_output_tokens``,
``temperature``, ``top_p``, ``seed``, ``stream``, ``text.format`` (``json_object``/``json_schema`` become
``response_format``, checked again for the chat runtime) and ``metadata`` (kept on the answer). Anything else that
changes an answer (tools, reasoning, ``previous_response_id``, files and images) is refused by name: the gateway keeps
no conversation state and the runtime would not see it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from studio.gateway.protocol import DONE

# Fields that translate, or that change nothing about the answer (store: the gateway stores nothing either way).
TRANSLATED = frozenset(
    {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "seed", "stream", "text"}
    | {"metadata", "store", "user", "stream_options", "parallel_tool_calls", "truncation"}
)
QUIET: dict[str, tuple[Any, ...]] = {  # of the others, values that ask for nothing
    "tools": ([],),
    "tool_choice": ("auto", "none"),
    "include": ([],),
    "previous_response_id": (),
    "reasoning": ({},),
}


def check(body: Any) -> tuple[str, str]:
    """(what is wrong with a Responses request, the parameter) or ('', '')."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object", ""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required: the name of a deployment (see GET /v1/models)", "model"
    given = body.get("input")
    if not (isinstance(given, str) and given) and not (isinstance(given, list) and given):
        return "'input' is required: a string, or a list of messages", "input"
    if isinstance(given, list):
        for i, item in enumerate(given):
            if not isinstance(item, dict) or not isinstance(item.get("role"), str):
                return f"input[{i}] must be a message with a 'role' (other input items are not supported)", "input"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "'stream' must be true or false", "stream"
    value = body.get("max_output_tokens")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        return "'max_output_tokens' must be a positive integer", "max_output_tokens"
    return "", ""


# Runtimes that serve /v1/responses themselves, and what each ignores there (`transformers serve` 5.x: its
# UNUSED_RESPONSE_FIELDS; ``text`` carries the output format).
NATIVE: dict[str, frozenset[str]] = {"transformers": frozenset({"text", "top_logprobs"}), "vllm": frozenset()}


def ignored_natively(runtime: str, body: dict[str, Any]) -> str:
    """The field of ``body`` that runtime ``runtime`` would ignore on its own /v1/responses and that asks for
    something, or ''."""
    for name in NATIVE.get(runtime, frozenset()):
        value = body.get(name)
        if name == "text" and isinstance(value, dict):
            fmt = value.get("format")
            if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
                return "text.format"
        elif name != "text" and value not in (None, 0):
            return name
    return ""


def untranslatable(body: dict[str, Any]) -> str:
    """The first field of ``body`` that cannot be translated onto chat completions and asks for something, or ''."""
    for name, value in body.items():
        if name in TRANSLATED or value is None or value in QUIET.get(name, ()):
            continue
        return name
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and "text" in p)


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completions request that asks what the Responses request ``body`` (``check``ed) asks."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    given = body["input"]
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    else:
        messages += [{"role": m["role"], "content": _text(m.get("content"))} for m in given]
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature",) * 2, ("top_p",) * 2, ("seed",) * 2):
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    if body.get("stream") is True:
        chat["stream"] = True
    return chat


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    given, made = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": given,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": made,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": given + made,
    }


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" or text else []
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def response_object(
    *,
    response_id: str,
    request: dict[str, Any],
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    created_at: int,
) -> dict[str, Any]:
    """A Response as OpenAI shapes it, echoing the request's settings."""
    text = request.get("text") if isinstance(request.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": request["model"],
        "output": output,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "metadata": request.get("metadata") or {},
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "text": text,
        "error": None,
        "incomplete_details": None if status != "incomplete" else {"reason": "max_output_tokens"},
        "usage": usage,
    }


def from_chat(answer: dict[str, Any], request: dict[str, Any], *, now: float | None = None) -> dict[str, Any]:
    """The Response to ``request`` from a runtime's chat completion ``answer`` (its first choice)."""
    choice = (answer.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    return response_object(
        response_id=new_id("resp"),
        request=request,
        status=status,
        output=[_message(new_id("msg"), text, "completed")],
        usage=_usage(answer.get("usage")),
        created_at=int(now if now is not None else time.time()),
    )


def _event(obj: dict[str, Any]) -> bytes:
    return b"event: " + obj["type"].encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


@dataclass
class ResponseStream:
    """Turns a chat completion stream into Responses events (pure: ``start``, then ``feed`` each chat SSE event's
    bytes, then ``finish``): response.created and response.in_progress, the message's output_item.added and
    content_part.added, an output_text.delta per content chunk, then output_text.done, content_part.done,
    output_item.done and response.completed with the usage (input_tokens/output_tokens). A chat error event ends
    it with an error event and response.failed."""

    request: dict[str, Any]
    now: float = field(default_factory=time.time)
    response_id: str = field(default_factory=lambda: new_id("resp"))
    item_id: str = field(default_factory=lambda: new_id("msg"))
    text: str = ""
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    failed: bool = False
    seq: int = 0

    def _emit(self, obj: dict[str, Any]) -> bytes:
        obj = {"type": obj.pop("type"), "sequence_number": self.seq, **obj}
        self.seq += 1
        return _event(obj)

    def _response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        usage = self.usage if status in ("completed", "incomplete") else None
        return response_object(
            response_id=self.response_id,
            request=self.request,
            status=status,
            output=output,
            usage=usage,
            created_at=int(self.now),
        )

    def start(self) -> bytes:
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        return b"".join(
            (
                self._emit({"type": "response.created", "response": self._response("in_progress", [])}),
                self._emit({"type": "response.in_progress", "response": self._response("in_progress", [])}),
                self._emit(
                    {
                        "type": "response.output_item.added",
                        "output_index": 0,
                        "item": _message(self.item_id, "", "in_progress"),
                    }
                ),
                self._emit(
                    {
                        "type": "response.content_part.added",
                        **where,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    }
                ),
            )
        )

    def feed(self, event: bytes) -> bytes:
        if not event.startswith(b"data:"):
            return b""
        payload = event[5:].strip()
        if payload == DONE[5:].strip():
            return b""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        if isinstance(obj.get("error"), dict):
            self.failed = True
            message = str(obj["error"].get("message") or "the model server failed")
            return self._emit({"type": "error", "code": obj["error"].get("code"), "message": message, "param": None})
        if isinstance(obj.get("usage"), dict):
            self.usage = _usage(obj["usage"])
        out = []
        for choice in obj.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content")
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            if delta:
                self.text += delta
                out.append(
                    self._emit(
                        {
                            "type": "response.output_text.delta",
                            "item_id": self.item_id,
                            "output_index": 0,
                            "content_index": 0,
                            "delta": delta,
                            "logprobs": [],
                        }
                    )
                )
        return b"".join(out)

    def finish(self) -> bytes:
        if self.failed:
            return self._emit({"type": "response.failed", "response": self._response("failed", [])})
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": self.text, "annotations": []}
        item = _message(self.item_id, self.text, "completed")
        status = "incomplete" if self.finish_reason == "length" else "completed"
        return b"".join(
            (
                self._emit({"type": "response.output_text.done", **where, "text": self.text, "logprobs": []}),
                self._emit({"type": "response.content_part.done", **where, "part": part}),
                self._emit({"type": "response.output_item.done", "output_index": 0, "item": item}),
                self._emit({"type": f"response.{status}", "response": self._response(status, [item])}),
            )
        )
