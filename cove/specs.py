"""``client.specs``: declarative specs — apply documents (or see what applying would change), delete what they
name, read objects as documents, and the documents' JSON Schema. A document is a mapping as in YAML:
``{"apiVersion": "cove/v1", "kind": "Deployment", "metadata": {"name": …}, "spec": {…}}``."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from studio.specs import Result

if TYPE_CHECKING:
    from cove.client import Client


class Specs:
    def __init__(self, client: Client) -> None:
        self.client = client

    def apply(self, documents: Iterable[Mapping[str, Any]], dry_run: bool = False) -> list[Result]:
        """Create what is missing and update what may change, per document ``created``/``updated``/``unchanged``
        with its changes; ``dry_run`` only says so. Raises InvalidSpec (changing nothing) for invalid documents,
        for a change to a field fixed at creation, or a recommendation no registered image meets."""
        body = {"documents": [dict(d) for d in documents], "dry_run": dry_run}
        return self._results("/apply", body)

    def delete(self, documents: Iterable[Mapping[str, Any]]) -> builtins.list[Result]:
        """Remove what the documents name, dependents first: ``deleted``, ``absent``, ``kept`` or ``refused``."""
        return self._results("/delete-specs", {"documents": [dict(d) for d in documents]})

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object as a document (applying it changes nothing); NotFound when there is none."""
        found: dict[str, Any] = self.client.request("GET", f"/specs/{kind}/{name}").json()
        return found

    def list(self, kind: str) -> list[dict[str, Any]]:
        """Every object of ``kind`` the caller may see, as documents."""
        found: list[dict[str, Any]] = self.client.request("GET", f"/specs/{kind}").json()
        return found

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of one document."""
        found: dict[str, Any] = self.client.request("GET", "/specs/schema.json").json()
        return found

    def _results(self, path: str, body: dict[str, Any]) -> builtins.list[Result]:
        answer = self.client.request("POST", path, body=body).json()
        return [Result.model_validate(r) for r in answer["results"]]
