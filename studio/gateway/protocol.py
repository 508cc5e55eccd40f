"""The OpenAI wire format, as the gateway needs it: request checks, error bodies, usage, and SSE metering.

Everything here is pure. ``StreamMeter`` reads a runtime's server-sent events one at a time, keeps the usage the
runtime reports (or counts content chunks when it reports none), renames the model to the deployment's name, and
hides the usage chunk from clients that did not ask for it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from studio.values import Route

DONE = b"data: [DONE]\n\n"


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | int | None = None, param: str | None = None
) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def model_object(route: Route) -> dict[str, Any]:
    """A deployment as OpenAI's model object. ``root`` is the model the runtime serves, as vLLM says it (`vllm bench
    serve` loads its tokenizer from it)."""
    return {
        "id": route.name,
        "object": "model",
        "created": route.created,
        "owned_by": "cove",
        "root": route.upstream_model,
    }


def check_request(body: Any, endpoint: str) -> str:
    """What is wrong with a request body, or ''. Checked here so runtimes never see malformed requests
    (some answer them with a bare 500)."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "'model' is required: the name of a deployment (see GET /v1/models)"
    if endpoint == "chat.completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list of {role, content} objects"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"messages[{i}] must be an object with a 'role'"
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                return f"messages[{i}].content must be a string or a list of parts"
    elif endpoint == "embeddings":
        given = body.get("input")
        if not isinstance(given, str | list) or not given:
            return "'input' is required: a string, or a list of strings (or of token ids)"
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list) or not prompt:
            return "'prompt' is required: a string (or a list of strings)"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "'stream' must be true or false"
    for field in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"'{field}' must be a positive integer"
    for field, lo, hi in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = body.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi
        ):
            return f"'{field}' must be a number from {lo} to {hi}"
    return ""


# The top-level fields `transformers serve` (5.x) accepts; it answers 422 to any other (its handlers'
# ``_valid_params_class``: OpenAI's create params plus generation_config, seed and chat_template_kwargs).
_TRANSFORMERS_COMMON = frozenset(
    {"model", "stream", "stream_options", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n"}
    | {"presence_penalty", "seed", "stop", "temperature", "top_p", "user", "generation_config"}
)
TRANSFORMERS_FIELDS: Mapping[str, frozenset[str]] = {
    "chat.completions": _TRANSFORMERS_COMMON
    | {"messages", "audio", "chat_template_kwargs", "function_call", "functions", "max_completion_tokens"}
    | {"metadata", "modalities", "moderation", "parallel_tool_calls", "prediction", "prompt_cache_key"}
    | {"prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "response_format"}
    | {"safety_identifier", "service_tier", "store", "tool_choice", "tools", "top_logprobs", "verbosity"}
    | {"web_search_options"},
    "completions": _TRANSFORMERS_COMMON | {"prompt", "best_of", "echo", "suffix"},
}
# What vLLM and SGLang accept beyond OpenAI's fields (benchmark clients send these) has no such list: both take
# ignore_eos, min_tokens, top_k, min_p, repetition_penalty and stream_options.continuous_usage_stats by these names.
PASS_THROUGH = frozenset({"vllm", "sglang", "triton", "custom"})

# OpenAI's parameters that change the answer and that some runtime accepts but ignores, each with the values that
# ask for nothing (the answer is the same whether it is honoured or not).
GUARDED: Mapping[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),  # chat: a bool; completions: an int, where 0 still asks for the sampled token's
    "top_logprobs": (None, 0),
    "response_format": (None, {"type": "text"}),
    "presence_penalty": (None, 0, 0.0),
    "best_of": (None, 1),
    "echo": (None, False),
}
# Of those, what each runtime kind honours. `transformers serve` 5.x takes them all and ignores each with a logged
# warning (its UNUSED_*_FIELDS). Triton's OpenAI frontend refuses n, logprobs and response_format itself. A custom
# image is not known: its requests are forwarded as sent and it answers for them.
HONOURED: Mapping[str, frozenset[str]] = {
    "transformers": frozenset(),
    "vllm": frozenset(GUARDED),
    "sglang": frozenset(GUARDED) - {"best_of"},
    "triton": frozenset({"presence_penalty"}),
    "custom": frozenset(GUARDED),
}
# What the gateway does itself for a runtime that ignores it: ``n`` copies of the request, their choices merged.
EMULATED = frozenset({"n"})
MAX_FAN_OUT = 16


@dataclass(frozen=True)
class Adapted:
    """A request body as one runtime takes it, and what was changed on the way (named as the client named it).
    ``refusal`` (with ``param``), when set, is why the request must be answered 400 rather than sent: a parameter the
    runtime would ignore and the gateway cannot do for it."""

    body: dict[str, Any]
    dropped: tuple[str, ...] = ()  # fields the runtime does not know and has no equivalent for
    translated: tuple[str, ...] = ()  # fields sent under the runtime's own name for the same thing
    emulated: tuple[str, ...] = ()  # fields the gateway honours for the runtime (``n``: ``fan_out`` requests)
    fan_out: int = 1
    refusal: str = ""
    param: str = ""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The response headers that tell the client what its runtime was not sent as asked."""
        out = []
        if self.dropped:
            out.append((b"x-cove-dropped-fields", ",".join(self.dropped).encode()))
        if self.translated:
            out.append((b"x-cove-translated-fields", ",".join(self.translated).encode()))
        if self.emulated:
            out.append((b"x-cove-emulated-fields", ",".join(self.emulated).encode()))
        return out

    def copies(self) -> list[dict[str, Any]]:
        """The bodies to send: one, or ``fan_out`` without ``n``, each with its own ``seed`` (seed + i) when one was
        given, so that the choices are drawn apart as one request's n choices are."""
        if self.fan_out == 1:
            return [self.body]
        base = {k: v for k, v in self.body.items() if k != "n"}
        seed = base.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return [{**base, "seed": seed + i} for i in range(self.fan_out)]
        return [base] * self.fan_out


def _asks(name: str, value: Any) -> bool:
    """Whether ``value`` of parameter ``name`` asks for something (not one of the values that ask for nothing)."""
    return not any(value == quiet and type(value) is type(quiet) for quiet in GUARDED[name] if quiet is not None) and (
        value is not None
    )


def guard(runtime: str, endpoint: str, body: dict[str, Any]) -> Adapted:
    """Which of ``body``'s guarded parameters the runtime would ignore, and what becomes of each: ``n`` is fanned
    out (at most MAX_FAN_OUT), every other one refused by name. The body is returned unchanged (``adapt_request``
    shapes it)."""
    honoured = HONOURED.get(runtime, frozenset(GUARDED))
    emulated: list[str] = []
    fan_out = 1
    for name in GUARDED:
        if name not in body or name in honoured or not _asks(name, body[name]):
            continue
        if name in EMULATED and isinstance(body[name], int) and not isinstance(body[name], bool):
            if body[name] > MAX_FAN_OUT:
                message = f"'n' may be at most {MAX_FAN_OUT} on runtime {runtime} (the gateway sends n requests)"
                return Adapted(body, refusal=message, param=name)
            emulated.append(name)
            fan_out = body[name]
            continue
        message = (
            f"'{name}' is not supported by this deployment's runtime ({runtime}), which would ignore it; "
            f"send the request without it, or deploy the model on a runtime that honours it (see docs/api.md)"
        )
        return Adapted(body, refusal=message, param=name)
    return Adapted(body, emulated=tuple(emulated), fan_out=fan_out)


def adapt_request(runtime: str, endpoint: str, body: dict[str, Any]) -> Adapted:
    """The body to send to a runtime of kind ``runtime`` for ``endpoint``. Parameters the runtime would ignore are
    ``guard``ed first: fanned out (``n``) or refused (the result's ``refusal``). Then vLLM and SGLang know the fields
    benchmark clients send (and runtimes of unknown kind get the request as it is); for `transformers serve`,
    which refuses unknown fields with a 422, ``repetition_penalty`` r becomes ``frequency_penalty`` r - 1 (the
    server's own mapping, inverted; unless one was given), ``stream_options.continuous_usage_stats`` is dropped (it
    reports usage once, at the end) and every other unknown field is dropped. ``body`` is not changed."""
    guarded = guard(runtime, endpoint, body) if endpoint in ("chat.completions", "completions") else Adapted(body)
    if guarded.refusal:
        return guarded
    known = TRANSFORMERS_FIELDS.get(endpoint)
    if runtime in PASS_THROUGH or known is None:
        return guarded
    out: dict[str, Any] = {}
    dropped: list[str] = []
    translated: list[str] = []
    for name, value in body.items():
        if name in known:
            out[name] = value
        elif (
            name == "repetition_penalty"
            and "frequency_penalty" not in body
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            out["frequency_penalty"] = float(value) - 1.0
            translated.append(name)
        else:
            dropped.append(name)
    options = out.get("stream_options")
    if isinstance(options, dict) and "continuous_usage_stats" in options:
        out["stream_options"] = {k: v for k, v in options.items() if k != "continuous_usage_stats"}
        dropped.append("stream_options.continuous_usage_stats")
    return dataclasses.replace(guarded, body=out, dropped=tuple(dropped), translated=tuple(translated))


def merge_choices(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One answer from the answers to ``n`` copies of a request: the first's fields, every copy's choices with
    indexes 0..n-1 in copy order, and their usage summed (each copy's prompt was computed: it is counted n times)."""
    merged = dict(answers[0])
    merged["choices"] = [
        {**choice, "index": i} for i, answer in enumerate(answers) for choice in (answer.get("choices") or [])[:1]
    ]
    usages = [a["usage"] for a in answers if isinstance(a.get("usage"), dict)]
    if usages:
        merged["usage"] = sum_usage(usages)
    return merged


def sum_usage(usages: list[dict[str, Any]]) -> dict[str, int]:
    prompt = sum(int(u.get("prompt_tokens") or 0) for u in usages)
    completion = sum(int(u.get("completion_tokens") or 0) for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class FanIn:
    """Interleaves the SSE events of ``n`` copies of one streamed request into one stream (pure: ``feed`` one copy's
    events as they come, ``finish`` when every copy has ended): each chunk's choice gets its copy's index, usage is
    held back and sent summed in one last chunk (when any copy reported it), and one ``[DONE]`` ends it."""

    usages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    template: dict[str, Any] = dataclasses.field(default_factory=dict)  # id, model, created of the first chunk

    def feed(self, copy: int, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            if not event.startswith(b"data:"):
                continue  # comments of one copy say nothing of the merged stream
            payload = event[5:].strip()
            if payload == b"[DONE]":
                continue
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            if "error" in obj:  # a copy failed mid-stream: the client is told as the runtime said it
                out.append(b"data: " + payload + b"\n\n")
                continue
            if not self.template:
                self.template = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
            if isinstance(obj.get("usage"), dict):
                self.usages.append(obj.pop("usage"))
            choices = obj.get("choices") or []
            if not choices:
                continue
            obj["choices"] = [{**c, "index": copy} for c in choices]
            out.append(b"data: " + orjson.dumps(obj) + b"\n\n")
        return b"".join(out)

    def finish(self) -> bytes:
        tail = b""
        if self.usages:
            chunk = {**self.template, "choices": [], "usage": sum_usage(self.usages)}
            tail = b"data: " + orjson.dumps(chunk) + b"\n\n"
        return tail + DONE


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A rough count (4 characters a token) for runtimes that report no usage; marked as estimated."""
    if "messages" in body:
        text = " ".join(_text_of(m.get("content")) for m in body["messages"] if isinstance(m, dict))
    else:
        prompt = body.get("prompt", body.get("input", ""))  # completions' prompt, embeddings' input
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    return math.ceil(len(text) / 4)


def usage_of(obj: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens an answer reports: chat's and completions' usage, or the Responses API's
    (``input_tokens``/``output_tokens``, also inside a stream event's ``response``)."""
    if isinstance(obj, dict) and isinstance(obj.get("response"), dict):
        obj = obj["response"]
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    if "input_tokens" in usage:
        return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def upstream_error(status: int, body: bytes) -> bytes:
    """A runtime's error in OpenAI's shape (runtimes answer with ``{"detail": …}`` or plain text too)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        return body
    if isinstance(obj, dict) and "detail" in obj:
        message = obj["detail"] if isinstance(obj["detail"], str) else orjson.dumps(obj["detail"]).decode()
    else:
        message = body.decode("utf-8", "replace")[:1000] or f"the model server answered {status}"
    kind = "invalid_request_error" if 400 <= status < 500 else "upstream_error"
    return error_body(message, type=kind, code=status)


def rename_model(obj: Any, name: str) -> None:
    if isinstance(obj, dict) and isinstance(obj.get("response"), dict):  # a Responses stream event
        obj = obj["response"]
    if isinstance(obj, dict) and "model" in obj:
        obj["model"] = name


@dataclass
class StreamMeter:
    """Feeds on one SSE event at a time (``process``); knows usage and time to first token at the end."""

    deployment: str
    client_wants_usage: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = False  # the runtime sent usage
    content_chunks: int = 0
    done: bool = False  # [DONE] seen
    texts: list[str] = dataclasses.field(default_factory=list)  # what was streamed: counted if usage is not reported

    def process(self, event: bytes) -> bytes | None:
        """The bytes to forward for this event (None: drop it)."""
        if not event.startswith(b"data:"):
            return event + b"\n\n"  # comments and other fields pass through
        payload = event[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return DONE
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event + b"\n\n"
        if not isinstance(obj, dict):
            return event + b"\n\n"
        usage = usage_of(obj)
        if usage is not None:
            self.prompt_tokens, self.completion_tokens = usage
            self.reported = True
        choices = obj.get("choices") or []
        if obj.get("type") == "response.output_text.delta" and obj.get("delta"):  # the Responses API's stream
            self.content_chunks += 1
            self.texts.append(str(obj["delta"]))
        for choice in choices:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or choice.get("text")
            if text:
                self.content_chunks += 1
                self.texts.append(text)
        strip = usage is not None and not self.client_wants_usage
        if strip and not choices:
            return None
        model = obj["response"].get("model") if isinstance(obj.get("response"), dict) else obj.get("model")
        if not strip and (model or self.deployment) == self.deployment:
            return event + b"\n\n"  # nothing to change: forward the runtime's bytes as they are
        if strip:
            obj.pop("usage", None)
        rename_model(obj, self.deployment)
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    @property
    def started(self) -> bool:
        return self.content_chunks > 0


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events in ``buffer`` (separated by a blank line) and the incomplete rest."""
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
    *events, rest = buffer.split(b"\n\n")
    return [e for e in events if e], rest
