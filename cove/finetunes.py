"""``client.finetunes``: fine-tune a model on a dataset, follow it to its new version, cancel, resume, read its logs
and events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cove.jobs import follow
from studio.models import EventPublic, FineTunePreview, FineTunePublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/finetunes"
Events = list[EventPublic]  # (the names `list` would be the method below, inside the class)
Lines = list[str]


class FineTunes:
    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, name: str, model: str, dataset: str, **fields: Any) -> FineTunePublic:
        """Fine-tune ``model`` (newest version unless ``model_version``) on ``dataset`` (newest unless
        ``dataset_version``) as job ``name``; other fields as ``FineTuneCreate``: pool, resources, target_model,
        group, and ``settings`` (rank, learning_rate, epochs, max_steps, …: see ``studio.finetuning``). Answers at
        once; ``wait`` follows it."""
        body = {"name": name, "model": model, "dataset": dataset, **fields}
        job: FineTunePublic = self.client.call(FineTunePublic, "POST", PATH, body=body)
        return job

    def preview(self, name: str, model: str, dataset: str, **fields: Any) -> FineTunePreview:
        """What ``create`` with the same arguments would make, without making it: settings with the defaults,
        the modules LoRA may target, estimated memory and time, whether it fits its pool now."""
        body = {"name": name, "model": model, "dataset": dataset, **fields}
        found: FineTunePreview = self.client.call(FineTunePreview, "POST", f"{PATH}/preview", body=body)
        return found

    def get(self, name: str) -> FineTunePublic:
        job: FineTunePublic = self.client.call(FineTunePublic, "GET", f"{PATH}/{name}")
        return job

    def list(self) -> Iterator[FineTunePublic]:
        """Every job the caller may see, newest first."""
        return self.client.pages(FineTunePublic, PATH)

    def cancel(self, name: str) -> FineTunePublic:
        job: FineTunePublic = self.client.call(FineTunePublic, "POST", f"{PATH}/{name}/cancel")
        return job

    def resume(self, name: str) -> FineTunePublic:
        job: FineTunePublic = self.client.call(FineTunePublic, "POST", f"{PATH}/{name}/resume")
        return job

    def delete(self, name: str) -> None:
        self.client.request("DELETE", f"{PATH}/{name}")

    def logs(self, name: str, *, tail: int = 100) -> Lines:
        lines: Lines = self.client.request("GET", f"{PATH}/{name}/logs", params={"tail": tail}).json()["lines"]
        return lines

    def events(self, name: str, *, limit: int = 50) -> Events:
        found: Events = self.client.call(Events, "GET", f"{PATH}/{name}/events", params={"limit": limit})
        return found

    def wait(
        self,
        name: str,
        *,
        timeout: float = 3600,
        poll: float = 1.0,
        on_progress: Callable[[FineTunePublic], None] | None = None,
    ) -> FineTunePublic:
        """Follow job ``name`` until it ends and return it: Succeeded (``result_version`` is the new version), or a
        CoveError with its message when it failed or was cancelled, or after ``timeout`` seconds. ``on_progress``
        sees each change of status or step."""
        return follow(
            lambda: self.get(name),
            what=f"fine-tune {name!r}",
            seen=lambda job: f"{job.status} {job.progress.get('step')} {job.progress.get('phase')} {job.message}",
            failed_hint=f"see its logs: client.finetunes.logs({name!r}); resume: client.finetunes.resume({name!r})",
            late_hint="wait longer, or read its logs",
            timeout=timeout,
            poll=poll,
            on_progress=on_progress,
        )
