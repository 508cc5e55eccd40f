"""The controller's part of scheduled re-evaluation: start what is due, judge what ended, call the webhooks.

``GateWatch.run`` is called every ``COVE_GATE_WATCH_S`` from a controller pass. It starts due re-evaluations
(``services.reevaluations.schedule``; the controller's evaluation runner then runs them like any other), judges
production's finished ones (``judge_production``), and hands each failure to the ``Notifier``, which POSTs
``webhook_body`` to the model's webhook (or ``COVE_GATE_WEBHOOK_URL``) on its own threads and records the outcome
as a ``WebhookSent`` or ``WebhookFailed`` event on the model. Nothing here waits on a receiver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from studio.db import Database
from studio.services import reevaluations
from studio.services.events import NewEvent, record_events
from studio.services.models import KIND
from studio.services.reevaluations import Alert
from studio.settings import Settings
from studio.webhooks import Delivery, Notifier

log = logging.getLogger(__name__)


def webhook_body(alert: Alert, *, ui_url: str) -> dict[str, Any]:
    """What the webhook receives when production fails its gate (docs/evaluation.md)."""
    return {
        "event": "gate_failing",
        "model": alert.model,
        "version": alert.version,
        "evaluation": alert.evaluation,
        "checks": alert.checks,
        "since": alert.since.isoformat(),
        "link": f"{ui_url.rstrip('/')}/models",
    }


class GateWatch:
    def __init__(self, *, db: Database, settings: Settings, notifier: Notifier, wall: Callable[[], datetime]) -> None:
        self.db, self.settings, self.notifier, self.wall = db, settings, notifier, wall
        self._said: set[tuple[str, str]] = set()  # what could not be started, said once rather than every time

    def run(self) -> None:
        now = self.wall()
        for done in reevaluations.schedule(db=self.db, now=now):
            if done.started:
                log.info("%s: %s", done.model, done.text)
            elif (done.model, done.text) not in self._said:
                self._said.add((done.model, done.text))
                log.warning("%s: %s", done.model, done.text)
                event = NewEvent("ReevaluationSkipped", done.text, "Warning")
                record_events(db=self.db, kind=KIND, name=done.model, events=[event])
        for alert in reevaluations.judge_production(db=self.db, now=now):
            url = alert.webhook or self.settings.gate_webhook_url
            if not url:
                continue
            body = webhook_body(alert, ui_url=self.settings.ui_url)
            self.notifier.send(url, body, self._recorder(alert.model))

    def _recorder(self, model: str) -> Callable[[Delivery], None]:
        def record(done: Delivery) -> None:
            event = (
                NewEvent("WebhookSent", done.describe())
                if done.ok
                else NewEvent("WebhookFailed", done.describe(), "Warning")
            )
            record_events(db=self.db, kind=KIND, name=model, events=[event])

        return record

    def close(self) -> None:
        self.notifier.close()
