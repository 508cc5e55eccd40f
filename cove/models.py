"""``client.models``: the catalog — register from the Hub or a folder the server reads, list, read, delete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from studio.errors import BackendUnavailable, from_wire
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

    def delete(self, name: str) -> None:
        self.client.request("DELETE", f"{PATH}/{name}")
