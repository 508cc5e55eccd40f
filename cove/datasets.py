"""``client.datasets``: chat datasets — register from a Hub dataset repo or a file or folder the server reads,
upload a file, list, read, preview rows, token lengths against a base model, delete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from studio.errors import BackendUnavailable, from_wire
from studio.models import DatasetAdded, DatasetLengths, DatasetPreview, DatasetPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/datasets"
CHUNK = 1 << 20


class Datasets:
    def __init__(self, client: Client) -> None:
        self.client = client

    def add(
        self, name: str, source: str, *, on_progress: Callable[[str], None] | None = None, **fields: Any
    ) -> DatasetAdded:
        """Register ``source`` (``hf:org/name[@revision]``, or a file or folder on the server) as ``name``;
        ``new_version=True`` adds the next version of an existing dataset, ``format=`` and ``columns=`` correct
        what is detected. ``unchanged`` in the answer: the newest version already has this content."""
        body = {"name": name, "source": source, **fields}
        if on_progress is None:
            added: DatasetAdded = self.client.call(DatasetAdded, "POST", PATH, body=body)
            return added
        for line in self.client.lines("POST", PATH, body=body, params={"progress": True}):
            if "progress" in line:
                on_progress(str(line["progress"]))
            elif "added" in line:
                return DatasetAdded.model_validate(line["added"])
            else:
                raise from_wire(0, line)
        raise BackendUnavailable(f"the Cove API at {self.client.url} ended the answer before the dataset was added")

    def upload(
        self,
        name: str,
        path: str | Path,
        *,
        columns: dict[str, str] | None = None,
        format: str | None = None,
        description: str = "",
        group: str | None = None,
        new_version: bool = False,
    ) -> DatasetAdded:
        """Send the file at ``path`` (streamed, never read whole) and register it as ``name``."""
        file = Path(path)
        params: dict[str, Any] = {
            "name": name,
            "filename": file.name,
            "description": description,
            "group": group,
            "format": format,
            "column": [f"{part}={column}" for part, column in (columns or {}).items()],
            "new_version": new_version,
        }
        with file.open("rb") as fh:
            chunks = iter(lambda: fh.read(CHUNK), b"")
            size = str(file.stat().st_size)
            headers = {"content-type": "application/octet-stream", "content-length": size}
            request = self.client.http.build_request(
                "POST",
                f"{PATH}/upload",
                content=chunks,
                params={k: v for k, v in params.items() if v is not None},
                headers=headers,
            )
            try:
                response = self.client.http.send(request)
            except httpx.TransportError as exc:
                raise BackendUnavailable(f"the Cove API at {self.client.url} does not answer: {exc}") from exc
        if response.is_error:
            self.client._raise(response)
        return DatasetAdded.model_validate(response.json())

    def get(self, name: str) -> DatasetPublic:
        found: DatasetPublic = self.client.call(DatasetPublic, "GET", f"{PATH}/{name}")
        return found

    def list(self, **filters: Any) -> Iterator[DatasetPublic]:
        """The datasets this client's user may see, filtered by ``q`` (part of the name or description)."""
        return self.client.pages(DatasetPublic, PATH, **filters)

    def preview(self, name: str, **params: Any) -> DatasetPreview:
        """The first rows (``rows=``) of a version (``version=``, ``split=``); with ``model=`` (and
        ``model_version=``, ``max_length=``) each row's rendering in segments, what is trained on marked."""
        found: DatasetPreview = self.client.call(DatasetPreview, "GET", f"{PATH}/{name}/preview", params=params)
        return found

    def lengths(self, name: str, model: str, **params: Any) -> DatasetLengths:
        """Token lengths of a version rendered with ``model``'s chat template, against ``max_length=``."""
        found: DatasetLengths = self.client.call(
            DatasetLengths, "GET", f"{PATH}/{name}/lengths", params={"model": model, **params}
        )
        return found

    def delete(self, name: str) -> None:
        self.client.request("DELETE", f"{PATH}/{name}")
