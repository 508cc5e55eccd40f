"""Webhooks: JSON POSTed to a URL off the caller's thread, with a short timeout and a few retries.

The controller tells a model's webhook when production fails its gate (``studio.gate_watch``). A receiver that is
slow, down or answers an error must never hold up a controller pass, so each delivery runs on a worker thread: it
is tried once, then again after each delay in ``backoff_s``, each try bounded by ``timeout_s``; a 2xx answer ends
it. Its outcome (``Delivery``) goes to the ``on_done`` callback the caller gave, which records it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """How one delivery went: ``ok`` with the receiver's status, or the last try's error, after ``attempts``."""

    url: str
    ok: bool
    attempts: int
    status: int | None
    error: str

    def describe(self) -> str:
        tries = f"{self.attempts} {'try' if self.attempts == 1 else 'tries'}"
        if self.ok:
            return f"POST {self.url}: {self.status} after {tries}"
        return f"POST {self.url} failed after {tries}: {self.error}"


class Notifier:
    """Delivers JSON bodies on up to ``workers`` threads; ``close`` waits for the ones under way (and cuts their
    waits between retries short)."""

    def __init__(self, *, timeout_s: float = 5.0, backoff_s: Sequence[float] = (1.0, 5.0), workers: int = 2) -> None:
        self.timeout_s, self.backoff_s = timeout_s, tuple(backoff_s)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cove-webhook")
        self._closing = threading.Event()

    def send(self, url: str, body: dict[str, Any], on_done: Callable[[Delivery], None]) -> Future[Delivery]:
        """Start delivering ``body`` to ``url``; returns at once."""
        return self._pool.submit(self._deliver, url, body, on_done)

    def _deliver(self, url: str, body: dict[str, Any], on_done: Callable[[Delivery], None]) -> Delivery:
        delays = (0.0, *self.backoff_s)
        status, error, attempts = None, "", 0
        with httpx.Client(timeout=self.timeout_s) as client:
            for delay in delays:
                if delay and self._closing.wait(delay):
                    break
                attempts += 1
                try:
                    answer = client.post(url, json=body)
                except httpx.HTTPError as exc:
                    status, error = None, f"{type(exc).__name__}: {exc}"
                    continue
                status = answer.status_code
                if answer.is_success:
                    error = ""
                    break
                error = f"HTTP {status}: {answer.text[:200]}"
        done = Delivery(url, not error, attempts, status, error)
        if not done.ok:
            log.warning("webhook: %s", done.describe())
        try:
            on_done(done)
        except Exception:  # recording the outcome must not kill the worker; the traceback is logged
            log.exception("webhook: recording the outcome of %s", url)
        return done

    def close(self) -> None:
        self._closing.set()
        self._pool.shutdown(wait=True)
