"""``client.images``: runtime images — list, read, register (a Dockerfile is built by the server), build again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from studio.models import ImagePublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/images"


class Images:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self, **filters: Any) -> Iterator[ImagePublic]:
        """Every image version, by name and newest first; filtered by name, runtime, build_status or builtin."""
        return self.client.pages(ImagePublic, PATH, **filters)

    def get(self, name: str, version: str | None = None) -> ImagePublic:
        """One image version (the newest registered unless ``version``)."""
        image: ImagePublic = self.client.call(ImagePublic, "GET", f"{PATH}/{name}", params={"version": version})
        return image

    def add(self, name: str, version: str, **fields: Any) -> ImagePublic:
        """Register image ``name`` at ``version``; other fields as ``ImageCreate``: ref, runtime, local_command,
        health_path, dockerfile (its text: the server builds it), description."""
        body = {"name": name, "version": version, **fields}
        image: ImagePublic = self.client.call(ImagePublic, "POST", PATH, body=body)
        return image

    def rebuild(self, name: str, version: str) -> ImagePublic:
        """Build a Dockerfile image again; ``cove.Conflict`` while it is being built."""
        image: ImagePublic = self.client.call(ImagePublic, "POST", f"{PATH}/{name}/versions/{version}/rebuild")
        return image
