"""Cove's Python client: ``cove.Client()`` drives a Cove through its API, from a notebook, a pipeline or a laptop.

    import cove
    client = cove.Client()                     # COVE_API_URL and a token, or a notebook's hub token, or `cove login`
    client.deployments.create("chat", model="demo-chat")
    client.deployments.wait_ready("chat")

Errors are the server's own classes (``cove.NotFound``, ``cove.Conflict``, …, all ``cove.CoveError``).
"""

from cove.client import Client
from studio.errors import (
    BackendUnavailable,
    Conflict,
    CoveError,
    DatabaseError,
    Forbidden,
    InvalidSpec,
    NotFound,
    QuotaExceeded,
    RuntimeUnavailable,
    SourceUnavailable,
    Stale,
    TooLarge,
    Unauthorized,
)

__all__ = [
    "BackendUnavailable",
    "Client",
    "Conflict",
    "CoveError",
    "DatabaseError",
    "Forbidden",
    "InvalidSpec",
    "NotFound",
    "QuotaExceeded",
    "RuntimeUnavailable",
    "SourceUnavailable",
    "Stale",
    "TooLarge",
    "Unauthorized",
]
