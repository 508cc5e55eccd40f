"""The playground's Gradio app: chat with a deployed model, compare two side by side, copy the code. The only Gradio
wiring; what is sent and how failures read comes from :mod:`playground.chat`, who is chatting (and with which key)
from :mod:`playground.visitors` and :mod:`playground.keys`.

Every handler that talks to the gateway takes the request (``gr.Request``) and chats as the person whose Cove
session it carries (with login off, the first admin), with a key of theirs. With login on, the whole app (page, API,
assets) is behind :class:`playground.visitors.LoginGate`: gradio_client callers send the ``cove_session`` cookie
(``Client(url, headers={"Cookie": "cove_session=…"})``).

API endpoints (``gradio_client.Client(url).submit(..., api_name="/chat")``), stateless (history is an argument):

- ``chat(message, history=[], model=None, system="", temperature=0.7, top_p=1.0, max_tokens=512)``
  streams ``(reply, stats)``; see :meth:`Handlers.chat`.
- ``compare(message, model_a, model_b, system="", temperature=0.7, top_p=1.0, max_tokens=512)``
  streams ``(reply_a, stats_a, reply_b, stats_b)``; see :meth:`Handlers.compare`.
- ``models()`` returns the ids of the Ready deployments.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Protocol

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # gradio reads it at import and at launch

import gradio as gr
import uvicorn
from fastapi import FastAPI

from playground.chat import (
    NO_MODELS,
    ChatClient,
    Language,
    PlaygroundClient,
    PlaygroundError,
    ReplyStats,
    Sampling,
    interleave,
    message_text,
    snippet,
    to_openai_messages,
)
from playground.keys import Keyring, studio_keys
from playground.visitors import CoveVisitors, LoginGate
from studio import sessions
from studio.bootstrap import open_studio
from studio.settings import Settings

DEFAULT = Sampling()
Messages = list[dict[str, Any]]


class Update(NamedTuple):
    """One step of a reply: the text so far, the status line under it, and whether it ended in an error."""

    text: str
    status: str
    failed: bool = False


class Visitors(Protocol):
    """Who a request's cookies belong to, as the handlers need it (:class:`playground.visitors.CoveVisitors`)."""

    def client(self, cookies: Mapping[str, str]) -> ChatClient:
        """The gateway as this visitor; raises PlaygroundError (NotLoggedIn) when they may not chat."""
        ...

    def greeting(self, cookies: Mapping[str, str]) -> str:
        """Who is logged in, as a line of HTML."""
        ...


def cookies_of(request: gr.Request | None) -> dict[str, str]:
    """The request's cookies ({} outside a Gradio event, e.g. a handler called directly)."""
    cookies = getattr(request, "cookies", None) if request is not None else None
    return {str(k): str(v) for k, v in dict(cookies or {}).items()}


class Handlers:
    """The event handlers, each chatting as the visitor whose request it serves. ``chat``, ``compare`` and ``models``
    are API endpoints: their signatures (names, order, defaults) are what gradio_client callers see (``request`` is
    filled in by Gradio, never by callers)."""

    def __init__(self, visitors: Visitors, *, gateway_url: str) -> None:
        self.visitors, self.gateway_url = visitors, gateway_url

    # -------------------------------------------------------------------------------------------- API endpoints

    def chat(
        self,
        message: str,
        history: Messages | None = None,
        model: str | None = None,
        system: str = "",
        temperature: float = DEFAULT.temperature,
        top_p: float = DEFAULT.top_p,
        max_tokens: int = DEFAULT.max_tokens,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[str, str]]:
        """Answer ``message`` after ``history`` (a list of ``{"role", "content"}`` dicts, OpenAI or Gradio shaped;
        omitted or [] for a new chat). ``model`` None or "" means the first Ready deployment.

        Streams ``(reply, stats)``: ``reply`` is the assistant text so far (it only grows); ``stats`` is a status line,
        and once the reply is complete "TTFT 123 ms · 45.6 tokens/s · 12 tokens". Failures never raise: the last
        output is ``(reply so far, message)`` where the message says what to do (gateway down, bad key, no model…).
        """
        if not message.strip():
            yield "", "Type a message first."
            return
        messages = to_openai_messages([*(history or []), {"role": "user", "content": message}], system)
        for update in self._replies(request, model, messages, Sampling(temperature, top_p, int(max_tokens))):
            yield update.text, update.status

    def compare(
        self,
        message: str,
        model_a: str | None,
        model_b: str | None,
        system: str = "",
        temperature: float = DEFAULT.temperature,
        top_p: float = DEFAULT.top_p,
        max_tokens: int = DEFAULT.max_tokens,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[str, str, str, str]]:
        """Send ``message`` (a new chat) to ``model_a`` and ``model_b`` at once. Streams
        ``(reply_a, stats_a, reply_b, stats_b)`` as either side advances; each side is as in :meth:`chat`."""
        if not message.strip():
            yield "", "Type a message first.", "", ""
            return
        messages = to_openai_messages([{"role": "user", "content": message}], system)
        sampling = Sampling(temperature, top_p, int(max_tokens))
        latest = [Update("", ""), Update("", "")]
        replies = [self._replies(request, model, messages, sampling) for model in (model_a, model_b)]
        for side, update in interleave(replies):
            latest[side] = update
            yield latest[0].text, latest[0].status, latest[1].text, latest[1].status

    def models(self, request: gr.Request | None = None) -> list[str]:
        """Ids of the Ready deployments this visitor may use; raises gr.Error with the clear message when the gateway
        cannot say."""
        try:
            return self.visitors.client(cookies_of(request)).models()
        except PlaygroundError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc

    # -------------------------------------------------------------------------------------------- UI only

    def add_turn(self, message: str, history: Messages) -> tuple[Any, Any]:
        """Show the user's message at once and clear the box; a blank message changes nothing."""
        if not message.strip():
            return gr.skip(), gr.skip()
        return "", [*history, {"role": "user", "content": message}]

    def respond(
        self,
        history: Messages,
        model: str | None,
        system: str,
        temperature: float,
        top_p: float,
        max_tokens: float,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[Any, str, Any]]:
        """Stream the assistant's answer to the last user message into the chatbot, with the stats line. On a failure
        before any text, the question leaves the chat and goes back into the prompt box, to resend once fixed."""
        if not history or history[-1].get("role") != "user":
            yield gr.skip(), gr.skip(), gr.skip()  # a blank prompt: nothing was asked
            return
        messages = to_openai_messages(history, system)
        for update in self._replies(request, model, messages, Sampling(temperature, top_p, int(max_tokens))):
            if update.failed:
                gr.Warning(update.status)
            if update.failed and not update.text:
                yield history[:-1], update.status, message_text(history[-1].get("content"))
            else:
                yield [*history, {"role": "assistant", "content": update.text}], update.status, gr.skip()

    def refresh(
        self, model: str | None, model_a: str | None, model_b: str | None, request: gr.Request | None = None
    ) -> tuple[Any, Any, Any, str]:
        """Fill the three model pickers from the gateway, keeping choices that are still Ready; the status line says
        why there is nothing to pick."""
        try:
            ready = self.visitors.client(cookies_of(request)).models()
        except PlaygroundError as exc:
            return gr.skip(), gr.skip(), gr.skip(), str(exc)
        first = ready[0] if ready else None
        second = ready[1] if len(ready) > 1 else first
        pickers = [
            gr.Dropdown(choices=ready, value=current if current in ready else fallback)
            for current, fallback in ((model, first), (model_a, first), (model_b, second))
        ]
        return pickers[0], pickers[1], pickers[2], "" if ready else NO_MODELS

    def code(
        self, model: str | None, system: str, temperature: float, top_p: float, max_tokens: float, language: Language
    ) -> Any:
        """The snippet panel for the current settings."""
        text = self.snippet(model, system, temperature, top_p, max_tokens, language)
        return gr.Code(value=text, language="python" if language == "python" else "shell")

    def snippet(
        self, model: str | None, system: str, temperature: float, top_p: float, max_tokens: float, language: Language
    ) -> str:
        """The snippet's text for the current settings; "MODEL" stands in while no model is chosen."""
        sampling = Sampling(temperature, top_p, int(max_tokens))
        base_url = self.gateway_url + "/v1"
        return snippet(base_url=base_url, model=model or "MODEL", sampling=sampling, system=system, language=language)

    # -------------------------------------------------------------------------------------------- shared

    def greeting(self, request: gr.Request | None = None) -> str:
        """Who is logged in, with a link to log out."""
        return self.visitors.greeting(cookies_of(request))

    def _replies(
        self, request: gr.Request | None, model: str | None, messages: Messages, sampling: Sampling
    ) -> Iterator[Update]:
        """The reply so far and a status line after each delta; a PlaygroundError becomes a last, failed update."""
        text = ""
        try:
            client = self.visitors.client(cookies_of(request))
            name = client.resolve_model(model)
            yield Update(text, f"Waiting for {name}…")
            for item in client.stream_chat(name, messages, sampling):
                if isinstance(item, ReplyStats):
                    yield Update(text, item.summary())
                else:
                    text += item
                    yield Update(text, f"{name} is answering…")
        except PlaygroundError as exc:
            yield Update(text, str(exc), failed=True)


# ------------------------------------------------------------------------------------------------ layout


class Knobs(NamedTuple):
    system: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    max_tokens: gr.Slider
    language: gr.Radio
    code: gr.Code


def _knobs(initial_code: str) -> Knobs:
    system = gr.Textbox(
        "", label="System prompt", lines=3, placeholder="You are a helpful assistant.", elem_id="system"
    )
    temperature = gr.Slider(0, 2, value=DEFAULT.temperature, step=0.05, label="Temperature", elem_id="temperature")
    top_p = gr.Slider(0, 1, value=DEFAULT.top_p, step=0.05, label="Top-p", elem_id="top-p")
    max_tokens = gr.Slider(1, 4096, value=DEFAULT.max_tokens, step=1, label="Max tokens", elem_id="max-tokens")
    with gr.Accordion("Code", open=True):
        language = gr.Radio(["python", "curl"], value="python", label="Language", elem_id="language")
        code = gr.Code(initial_code, language="python", label="Same request from your code", elem_id="snippet")
    return Knobs(system, temperature, top_p, max_tokens, language, code)


def _model_picker(label: str, elem_id: str) -> gr.Dropdown:
    # custom values: API callers may name a deployment that became Ready after this page was built
    return gr.Dropdown(choices=[], value=None, label=label, allow_custom_value=True, elem_id=elem_id)


def build_demo(settings: Settings, *, visitors: Visitors) -> gr.Blocks:
    """The playground app for the gateway in ``settings``, chatting as each of ``visitors`` (injectable). Builds only:
    no request is made until a page loads or an endpoint is called. Component ids: see the ``elem_id`` values below."""
    h = Handlers(visitors, gateway_url=settings.gateway_url)
    with gr.Blocks(title="Cove playground", analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("## Cove playground")
            who = gr.HTML(elem_id="who")  # HTML: a Markdown link to another port would open a new tab
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            with gr.Column(scale=3), gr.Tabs():
                with gr.Tab("Chat", id="chat"):
                    with gr.Row(equal_height=True):
                        model = _model_picker("Model", "model")
                        refresh = gr.Button("Refresh models", scale=0, elem_id="refresh")
                    chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chatbot")
                    with gr.Row():
                        prompt = gr.Textbox(label="Message", placeholder="Ask something…", scale=4, elem_id="prompt")
                        send = gr.Button("Send", variant="primary", scale=0, elem_id="send")
                        stop = gr.Button("Stop", variant="stop", scale=0, elem_id="stop")
                    stats = gr.Markdown(label="stats", elem_id="stats")
                    clear = gr.ClearButton([chatbot, stats], value="New chat", elem_id="clear")
                    history = gr.JSON(value=[], label="history", visible=False)  # API input only
                    reply = gr.Textbox(label="reply", visible=False)  # API output only
                with gr.Tab("Compare", id="compare"):
                    with gr.Row():
                        model_a = _model_picker("Model A", "model-a")
                        model_b = _model_picker("Model B", "model-b")
                    question = gr.Textbox(label="Message", placeholder="Ask both…", elem_id="compare-prompt")
                    with gr.Row():
                        run = gr.Button("Compare", variant="primary", elem_id="compare-send")
                        halt = gr.Button("Stop", variant="stop", elem_id="compare-stop")
                    with gr.Row():
                        with gr.Column():
                            reply_a = gr.Markdown(label="reply_a", elem_id="compare-a")
                            stats_a = gr.Markdown(label="stats_a", elem_id="stats-a")
                        with gr.Column():
                            reply_b = gr.Markdown(label="reply_b", elem_id="compare-b")
                            stats_b = gr.Markdown(label="stats_b", elem_id="stats-b")
            with gr.Column(scale=2):
                k = _knobs(h.snippet(None, "", DEFAULT.temperature, DEFAULT.top_p, DEFAULT.max_tokens, "python"))
        sampling: list[gr.Textbox | gr.Slider] = [k.system, k.temperature, k.top_p, k.max_tokens]

        asked = gr.on(
            [prompt.submit, send.click],
            h.add_turn,
            [prompt, chatbot],
            [prompt, chatbot],
            queue=False,
            trigger_mode="once",
            api_visibility="private",
        )
        answer = asked.then(h.respond, [chatbot, model, *sampling], [chatbot, stats, prompt], api_visibility="private")
        stop.click(None, cancels=[answer], api_visibility="private")
        clear.click(None, cancels=[answer], api_visibility="private")
        # no trigger: an endpoint for API callers only, stateless (the UI keeps its history in the chatbot)
        gr.on([], h.chat, [prompt, history, model, *sampling], [reply, stats], api_name="chat")

        compared = gr.on(
            [question.submit, run.click],
            h.compare,
            [question, model_a, model_b, *sampling],
            [reply_a, stats_a, reply_b, stats_b],
            api_name="compare",
            trigger_mode="once",
        )
        halt.click(None, cancels=[compared], api_visibility="private")
        gr.on([], h.models, None, gr.JSON(label="models", visible=False), api_name="models")

        pickers = [model, model_a, model_b]
        demo.load(h.greeting, None, who, api_visibility="private")
        gr.on([demo.load, refresh.click], h.refresh, pickers, [*pickers, status], api_visibility="private")
        gr.on(
            [model.change, *(c.change for c in sampling), k.language.change],
            h.code,
            [model, *sampling, k.language],
            k.code,
            queue=False,
            api_visibility="private",
        )
    demo.queue(default_concurrency_limit=16)  # a streaming reply holds its slot; let a few people chat at once
    return demo


def build_app(settings: Settings, *, visitors: CoveVisitors) -> FastAPI:
    """The playground as an ASGI app: the Gradio app at ``/``, ``/healthz`` for probes, and with login on the
    :class:`LoginGate` in front of everything but ``/healthz``."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    demo = build_demo(settings, visitors=visitors)
    app = gr.mount_gradio_app(app, demo, path="", server_name=settings.host, server_port=settings.playground_port)
    if settings.login:
        app.add_middleware(
            LoginGate,
            who=visitors.who,
            login_url=functools.partial(sessions.login_url, settings),
            public_url=settings.playground_url,
        )
    return app


def serve(settings: Settings) -> None:
    """Serve the playground on ``settings.host``:``settings.playground_port`` until interrupted (blocks). Opens the
    studio's database (sessions, users, and the keys it makes for each person); nothing is shared publicly."""
    db = open_studio(settings)
    base = PlaygroundClient.from_settings(settings)
    visitors = CoveVisitors(settings=settings, db=db, keyring=Keyring(base=base, make_key=studio_keys(db)))
    try:
        uvicorn.run(
            build_app(settings, visitors=visitors),
            host=settings.host,
            port=settings.playground_port,
            log_level=settings.log_level,
            access_log=False,
        )
    finally:
        base.close()
        db.dispose()
