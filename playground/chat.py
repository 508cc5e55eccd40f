"""What the playground says to the gateway: message shaping, sampling, code snippets, reply stats, and a thin client.

Everything here except :class:`PlaygroundClient` and :func:`interleave` is pure: no I/O, no clock of its own, inputs
never mutated. The client is built from settings (``openai.OpenAI`` against ``{gateway_url}/v1``), sends one key (a
person's own: :mod:`playground.keys` gives each their :meth:`PlaygroundClient.with_key`), and translates every failure
into a :class:`PlaygroundError` whose message a user can act on; the Gradio wiring lives in ``app.py``.
"""

from __future__ import annotations

import copy
import json
import queue
import shlex
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from studio.settings import Settings

T = TypeVar("T")
Language = Literal["python", "curl"]

NO_MODELS = "No model is deployed and Ready yet. Deploy one in the Studio (Deploy page) or with `cove deploy create`."
KEY_ENV = "COVE_API_KEY"  # what snippets read the key from; the secret itself is never shown
SAMPLE_PROMPT = "Hello!"


# ------------------------------------------------------------------------------------------------ errors


class PlaygroundError(Exception):
    """A failure talking to the gateway, with a message meant for the person at the playground."""


class GatewayUnreachable(PlaygroundError):
    """Nothing answers at the gateway's address (or the connection broke)."""


class KeyRejected(PlaygroundError):
    """The gateway answered 401: the key sent is missing, unknown, revoked or expired."""


class NotLoggedIn(PlaygroundError):
    """The request carries no Cove session (or its user was removed or disabled since the page was opened)."""


class NoModels(PlaygroundError):
    """The gateway serves no Ready deployment."""

    def __init__(self) -> None:
        super().__init__(NO_MODELS)


class GatewayRefused(PlaygroundError):
    """Any other error the gateway (or a model behind it) answered; ``status`` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------------ messages


def message_text(content: object) -> str:
    """The text of one Gradio message's ``content``: a string as is; text parts of a list or dict joined by newlines;
    files and components dropped (the gateway speaks text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        text = content.get("text") if content.get("type", "text") == "text" else None
        return text if isinstance(text, str) else ""
    if isinstance(content, list):  # a tuple is Gradio's older (path, alt text) file form: no text for the model
        return "\n".join(t for t in (message_text(part) for part in content if not isinstance(part, tuple)) if t)
    return ""


def to_openai_messages(history: Iterable[Mapping[str, Any]] | None, system: str | None = None) -> list[dict[str, str]]:
    """Gradio "messages" history (``{"role", "content"}`` dicts) plus an optional system prompt → OpenAI messages.

    The system prompt, when not blank, comes first. Each message keeps its role and its text only
    (:func:`message_text`); messages left without text (a file alone) and roles other than user, assistant and system
    are dropped. Returns new dicts; ``history`` is never mutated.
    """
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    for message in history or ():
        role, text = message.get("role"), message_text(message.get("content"))
        if role in ("user", "assistant", "system") and text:
            messages.append({"role": str(role), "content": text})
    return messages


@dataclass(frozen=True)
class Sampling:
    """The sampling knobs the playground exposes, with the values OpenAI clients default to (and a sane length)."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512

    def as_params(self) -> dict[str, float | int]:
        """Keyword arguments for ``chat.completions.create`` (and JSON body fields)."""
        return {"temperature": float(self.temperature), "top_p": float(self.top_p), "max_tokens": int(self.max_tokens)}


# ------------------------------------------------------------------------------------------------ snippets


def snippet(*, base_url: str, model: str, sampling: Sampling, system: str = "", language: Language = "python") -> str:
    """Copy-paste code that sends one streamed chat request with these settings.

    ``base_url`` is the gateway's ``…/v1``. The key is read from the ``$COVE_API_KEY`` environment variable, never
    written out. Raises ValueError for a language other than "python" or "curl".
    """
    messages = to_openai_messages([{"role": "user", "content": SAMPLE_PROMPT}], system)
    if language == "python":
        return _python_snippet(base_url, model, sampling, messages)
    if language == "curl":
        body = {"model": model, "messages": messages, **sampling.as_params(), "stream": True}
        return (
            f"curl -N {shlex.quote(base_url.rstrip('/') + '/chat/completions')} \\\n"
            f'  -H "Authorization: Bearer ${KEY_ENV}" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f"  -d {shlex.quote(json.dumps(body, indent=2, ensure_ascii=False))}\n"
        )
    raise ValueError(f"no snippet for {language!r}: choose 'python' or 'curl'")


def _python_snippet(base_url: str, model: str, sampling: Sampling, messages: list[dict[str, str]]) -> str:
    def literal(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid Python string literal

    lines = [
        "import os",
        "",
        "from openai import OpenAI",
        "",
        f'client = OpenAI(base_url={literal(base_url)}, api_key=os.environ["{KEY_ENV}"])',
        "stream = client.chat.completions.create(",
        f"    model={literal(model)},",
        "    messages=[",
        *(f'        {{"role": {literal(m["role"])}, "content": {literal(m["content"])}}},' for m in messages),
        "    ],",
        *(f"    {name}={value!r}," for name, value in sampling.as_params().items()),
        "    stream=True,",
        ")",
        "for chunk in stream:",
        "    if chunk.choices and chunk.choices[0].delta.content:",
        '        print(chunk.choices[0].delta.content, end="", flush=True)',
        "print()",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ stats


@dataclass
class ReplyStats:
    """Timing of one streamed reply, fed with timestamps (seconds on any monotonic clock) by whoever reads it.

    ``tokens`` is the completion token count the gateway reported on the final chunk, else the number of text chunks.
    ``tokens_per_s`` is the decoding speed: tokens after the first, over the time from the first to the last token
    (None until two tokens arrived at distinct times).
    """

    started: float
    first_token_at: float | None = None
    last_token_at: float | None = None
    chunks: int = 0
    reported_tokens: int | None = None

    def add_chunk(self, now: float) -> None:
        """A chunk with text arrived at ``now``."""
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        self.chunks += 1

    def add_usage(self, completion_tokens: int | None) -> None:
        """The gateway's count of completion tokens, from the usage on the final chunk."""
        if completion_tokens is not None:
            self.reported_tokens = completion_tokens

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - self.started) * 1000

    @property
    def tokens(self) -> int:
        return self.chunks if self.reported_tokens is None else self.reported_tokens

    @property
    def tokens_per_s(self) -> float | None:
        if self.first_token_at is None or self.last_token_at is None or self.tokens < 2:
            return None
        elapsed = self.last_token_at - self.first_token_at
        return (self.tokens - 1) / elapsed if elapsed > 0 else None

    def summary(self) -> str:
        """One line, e.g. "TTFT 123 ms · 45.6 tokens/s · 12 tokens"; parts not measured are left out."""
        parts = [] if self.ttft_ms is None else [f"TTFT {self.ttft_ms:.0f} ms"]
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        parts.append(f"{self.tokens} token" + ("" if self.tokens == 1 else "s"))
        return " · ".join(parts)


# ------------------------------------------------------------------------------------------------ client


class ChatClient(Protocol):
    """What the handlers ask of the gateway, for one person: :class:`PlaygroundClient`, or
    :class:`playground.keys.PersonalClient` (which re-makes a refused key)."""

    def models(self) -> list[str]: ...

    def resolve_model(self, model: str | None) -> str: ...

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling
    ) -> Iterator[str | ReplyStats]: ...


@dataclass
class PlaygroundClient:
    """The gateway seen from the playground: model ids and streamed chats, every failure a :class:`PlaygroundError`.

    Safe to share between threads (the OpenAI client is). ``clock`` times replies; tests may inject one. Clients made
    with :meth:`with_key` share this one's connections: close only the one built first.
    """

    gateway_url: str
    api_key: str = ""
    timeout_s: float = 300
    clock: Callable[[], float] = time.perf_counter
    _openai: openai.OpenAI = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._openai = openai.OpenAI(
            base_url=self.gateway_url.rstrip("/") + "/v1",
            # the SDK refuses an empty key; a placeholder lets a gateway without auth answer, and one with auth say 401
            api_key=self.api_key or "no-key-set",
            timeout=openai.Timeout(self.timeout_s, connect=5),
            max_retries=0,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PlaygroundClient:
        """The gateway at GATEWAY_URL, with no key yet (:meth:`with_key` gives each person theirs); reads wait a
        little longer than the gateway waits on a model, so that the gateway's own, clearer timeout error arrives
        first."""
        return cls(gateway_url=settings.gateway_url, timeout_s=settings.upstream_read_timeout_s + 10)

    def with_key(self, api_key: str) -> PlaygroundClient:
        """A client like this one that sends ``api_key``, over this one's connection pool (cheap: one per person)."""
        twin = copy.copy(self)
        twin.api_key = api_key
        twin._openai = self._openai.with_options(api_key=api_key or "no-key-set")
        return twin

    def close(self) -> None:
        self._openai.close()

    def models(self) -> list[str]:
        """Ids of the Ready deployments (``GET /v1/models``), sorted as the gateway lists them; may be empty."""
        try:
            return [model.id for model in self._openai.models.list()]
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc

    def resolve_model(self, model: str | None) -> str:
        """``model``, or when none is chosen the first Ready one; raises NoModels when there is none."""
        if model:
            return model
        ready = self.models()
        if not ready:
            raise NoModels()
        return ready[0]

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling
    ) -> Generator[str | ReplyStats, None, None]:
        """Yield the reply's text deltas as they arrive, then (last) its :class:`ReplyStats`.

        Raises PlaygroundError: GatewayUnreachable, KeyRejected, NoModels (the model is unknown and none is Ready),
        GatewayRefused (anything else the gateway answered). Closing the generator closes the HTTP stream.
        """
        stats = ReplyStats(started=self.clock())
        try:
            stream = self._openai.chat.completions.create(
                model=model,
                messages=cast("list[ChatCompletionMessageParam]", [dict(m) for m in messages]),
                stream=True,
                stream_options={"include_usage": True},
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=int(sampling.max_tokens),
            )
            with stream:
                for chunk in stream:
                    if chunk.usage is not None:
                        stats.add_usage(chunk.usage.completion_tokens)
                    text = chunk.choices[0].delta.content if chunk.choices else None
                    if text:
                        stats.add_chunk(self.clock())
                        yield text
        except openai.NotFoundError as exc:
            if exc.code == "model_not_found" and not self.models():
                raise NoModels() from exc
            raise self._translate(exc) from exc
        except openai.OpenAIError as exc:
            raise self._translate(exc, mid_reply=stats.chunks > 0) from exc
        yield stats

    def _translate(self, exc: openai.OpenAIError, *, mid_reply: bool = False) -> PlaygroundError:
        """The user-facing error for an SDK error; the SDK error stays the ``__cause__``."""
        url = self.gateway_url
        if isinstance(exc, openai.APITimeoutError):
            return GatewayUnreachable(f"The Cove gateway at {url} did not answer within {self.timeout_s:.0f} s.")
        if isinstance(exc, openai.APIConnectionError):
            if mid_reply:
                return GatewayUnreachable(f"The connection to the Cove gateway at {url} broke during the reply.")
            return GatewayUnreachable(
                f"The Cove gateway at {url} does not answer. Start Cove with `make up` (or `cove up`)."
            )
        if isinstance(exc, openai.AuthenticationError):
            return KeyRejected(f"The gateway at {url} refused the API key: {_gateway_message(exc)}")
        if isinstance(exc, openai.APIStatusError):
            return GatewayRefused(_gateway_message(exc), exc.status_code)
        if isinstance(exc, openai.APIError):
            return GatewayRefused(_gateway_message(exc))
        return PlaygroundError(str(exc))


def _gateway_message(exc: openai.APIError) -> str:
    """The message the gateway put in its OpenAI-shaped error body, else the SDK's summary."""
    body = exc.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    if isinstance(body, str) and body:
        return body
    return exc.message


# ------------------------------------------------------------------------------------------------ side by side


def interleave(streams: Sequence[Iterator[T]]) -> Iterator[tuple[int, T]]:
    """Items of several iterators as they come, each tagged with its iterator's index; one thread per iterator.

    An exception in an iterator is re-raised here. Closing this generator asks the threads to stop after their
    current item (an iterator blocked on I/O finishes that wait first) and closes the iterators they finished.
    """
    done = object()
    items: queue.Queue[tuple[int, object]] = queue.Queue()
    stop = threading.Event()

    def pump(index: int, stream: Iterator[T]) -> None:
        try:
            for item in stream:
                items.put((index, item))
                if stop.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - handed to the consumer's thread, which re-raises it
            items.put((index, _Failure(exc)))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            items.put((index, done))

    threads = [threading.Thread(target=pump, args=(i, s), daemon=True) for i, s in enumerate(streams)]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            index, item = items.get()
            if item is done:
                running -= 1
            elif isinstance(item, _Failure):
                raise item.exc
            else:
                yield index, item  # type: ignore[misc]
    finally:
        stop.set()


@dataclass(frozen=True)
class _Failure:
    exc: Exception
