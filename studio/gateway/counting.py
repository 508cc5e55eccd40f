"""Token counts the runtime did not report (a stream the client left early, a runtime that reports no usage),
counted with the deployment's own tokenizer and chat template.

The tokenizer is read from the model version's folder, offline, on a worker thread, the first time a deployment needs
it, and kept per (deployment, folder). Where it cannot be read (a gateway without the models volume, a folder without
a tokenizer) that is remembered too, and callers fall back to an estimate. Requests whose usage the runtime reports
never come here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...
    def encode(self, text: str, **kwargs: Any) -> list[int]: ...


def load_tokenizer(folder: str) -> Tokenizer | None:
    """The tokenizer in ``folder``, or None when it cannot be read (logged once by the caller's cache)."""
    from transformers import AutoTokenizer

    try:
        tokenizer: Tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - the Rust tokenizers raise bare Exceptions on a bad tokenizer.json
        log.info("no tokenizer to count tokens with in %s (%s): usage will be estimated", folder, exc)
        return None
    return tokenizer


def prompt_tokens(tokenizer: Tokenizer, body: dict[str, Any]) -> int | None:
    """The prompt's tokens as the runtime sees them: chat messages rendered with the chat template and the generation
    prompt; a completion prompt encoded with special tokens (a list of ids counts as is). None when it cannot be
    rendered (no chat template, a message the template refuses)."""
    try:
        if "messages" in body:
            ids = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # some versions answer a BatchEncoding
                ids = ids["input_ids"]
            return len(ids)
        prompt = body.get("prompt", "")
        if isinstance(prompt, str):
            return len(tokenizer.encode(prompt))
        if all(isinstance(p, int) for p in prompt):
            return len(prompt)
        if all(isinstance(p, str) for p in prompt):
            return sum(len(tokenizer.encode(p)) for p in prompt)
        return sum(len(p) for p in prompt if isinstance(p, list))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # jinja2's errors are ValueErrors here
        log.debug("could not render the prompt to count it: %s", exc)
        return None


def completion_tokens(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0


class TokenCounter:
    """Counts with each deployment's tokenizer, loaded lazily off the event loop (``loader`` is injected in tests)."""

    def __init__(self, loader: Callable[[str], Tokenizer | None] = load_tokenizer) -> None:
        self.loader = loader
        self._tokenizers: dict[tuple[str, str], Tokenizer | None] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[Tokenizer | None]] = {}

    async def tokenizer(self, deployment: str, folder: str) -> Tokenizer | None:
        if not folder:
            return None
        key = (deployment, folder)
        if key in self._tokenizers:
            return self._tokenizers[key]
        pending = self._loading.get(key)
        if pending is None:  # one load per deployment, however many requests wait for it
            pending = self._loading[key] = asyncio.ensure_future(asyncio.to_thread(self.loader, folder))
        try:
            tokenizer = await asyncio.shield(pending)
        finally:
            self._loading.pop(key, None)
        self._tokenizers[key] = tokenizer
        return tokenizer

    async def count(self, deployment: str, folder: str, body: dict[str, Any], text: str) -> tuple[int, int] | None:
        """(prompt tokens, completion tokens of ``text``), or None when there is no tokenizer or no rendering."""
        tokenizer = await self.tokenizer(deployment, folder)
        if tokenizer is None:
            return None
        return await asyncio.to_thread(_count, tokenizer, body, text)


def _count(tokenizer: Tokenizer, body: dict[str, Any], text: str) -> tuple[int, int] | None:
    prompt = prompt_tokens(tokenizer, body)
    return None if prompt is None else (prompt, completion_tokens(tokenizer, text))
