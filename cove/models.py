"""``client.models``: the catalog — register from the Hub or a folder the server reads, list, read, delete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from studio.errors import BackendUnavailable, from_wire
from studio.memplan import Hardware, Plan
from studio.models import ModelPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/models"


class Models:
    def __init__(self, client: Client) -> None:
        self.client = client

    def add(
        self, name: str, source: str, *, on_progress: Callable[[str], None] | None = None, **fields: Any
    ) -> ModelPublic:
        """Register ``source`` (``hf:org/name[@revision]``, ``org/name``, or a folder on the server) as ``name``;
        ``new_version=True`` adds the next version of an existing model. Answers once the files are stored;
        ``on_progress`` hears the server's progress lines (files and bytes fetched) as they come."""
        body = {"name": name, "source": source, **fields}
        if on_progress is None:
            model: ModelPublic = self.client.call(ModelPublic, "POST", PATH, body=body)
            return model
        for line in self.client.lines("POST", PATH, body=body, params={"progress": True}):
            if "progress" in line:
                on_progress(str(line["progress"]))
            elif "model" in line:
                return ModelPublic.model_validate(line["model"])
            else:
                raise from_wire(0, line)
        raise BackendUnavailable(f"the Cove API at {self.client.url} ended the answer before the model was added")

    def get(self, name: str) -> ModelPublic:
        model: ModelPublic = self.client.call(ModelPublic, "GET", f"{PATH}/{name}")
        return model

    def list(self, **filters: Any) -> Iterator[ModelPublic]:
        """The catalog, filtered by owner, group or ``q`` (part of the name or description)."""
        return self.client.pages(ModelPublic, PATH, **filters)

    def plan(self, name: str, *, version: int | None = None, parameters: int | None = None, **hardware: Any) -> Plan:
        """The memory plan of ``name`` (at ``version``, default the newest) on the hardware given as
        ``studio.memplan.Hardware``'s fields (``gpu_memory_mib`` at least; ``gpus``, ``context``, ``concurrency``,
        ``kv_cache_dtype``, ``runtime``, ``weights``, …). A plan that does not fit says why in ``reason``."""
        asked = Hardware.model_validate(hardware).model_dump(mode="json", exclude_unset=True)
        params = {**asked, "version": version, "parameters": parameters}
        found: Plan = self.client.call(Plan, "GET", f"{PATH}/{name}/plan", params=params)
        return found

    def delete(self, name: str) -> None:
        self.client.request("DELETE", f"{PATH}/{name}")
