"""The errors Cove raises, and nothing else.

Every error carries a message for the user (what went wrong) and a hint (what to do next). Third-party errors are
translated at the boundary with ``raise … from exc`` so the cause is kept.

    CoveError
    ├── NotFound            a named thing does not exist                       (HTTP 404, CLI exit 1)
    ├── Unauthorized        who asks is not known: no login, a wrong password  (401)
    ├── Forbidden           known, but not allowed: not theirs, not an admin   (403)
    ├── Conflict            it exists already, or is in use                    (409)
    │   ├── PortInUse       a port Cove must listen on is taken
    │   ├── Stale           changed since the caller read it (their ETag/generation is old)
    │   └── GateRefused     a promotion its model's gate refuses: names each failing check
    ├── InvalidSpec         the request is malformed: names, numbers, a corrupt model folder (422)
    │   └── TooLarge        the request's body is over the limit              (413)
    ├── QuotaExceeded       it does not fit the pool: says what is free        (409)
    ├── SourceUnavailable   a model source cannot be reached (offline Hub, missing file)
    ├── RuntimeUnavailable  the runtime cannot run on this backend (no GPU, not installed)
    ├── BackendUnavailable  the backend itself does not answer
    └── DatabaseError       the database cannot be opened or migrated
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError


class CoveError(Exception):
    """Base of every Cove error: ``message`` says what went wrong, ``hint`` what to do next."""

    hint_default = ""

    def __init__(self, message: str, *, hint: str = "", fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.hint_default
        self.fields = fields or []  # each invalid field of a request: {"path": "spec.replicas", "message": "…"}

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NotFound(CoveError):
    pass


class Unauthorized(CoveError):
    hint_default = "log in again"


class Forbidden(CoveError):
    pass


class Conflict(CoveError):
    pass


class PortInUse(Conflict):
    pass


class Stale(Conflict):
    """An update that names the generation it read (If-Match) when the object has moved on: ``generation`` is
    the current one."""

    def __init__(self, message: str, *, generation: int, hint: str = "") -> None:
        super().__init__(message, hint=hint or "read it again, and make your change to what it is now")
        self.generation = generation


class GateRefused(Conflict):
    """A promotion the model's gate refused: ``fields`` holds each failing check (``path`` its name, ``message``
    its numbers in words)."""

    hint_default = "improve the version and evaluate it again, or (an admin) override with a reason"


class InvalidSpec(CoveError):
    pass


class TooLarge(InvalidSpec):
    pass


class QuotaExceeded(CoveError):
    pass


class SourceUnavailable(CoveError):
    pass


class RuntimeUnavailable(CoveError):
    pass


class BackendUnavailable(CoveError):
    pass


class DatabaseError(CoveError):
    pass


def invalid_fields(errors: Iterable[Mapping[str, Any]], *, prefix: tuple[str | int, ...] = ()) -> list[dict[str, str]]:
    """Each invalid field of a validation's ``errors()`` as ``{"path": "a.b.0", "message": "…"}``."""
    return [
        {
            "path": ".".join(str(p) for p in (*prefix, *err["loc"])) or "value",
            "message": str(err["msg"]).removeprefix("Value error, "),
        }
        for err in errors
    ]


def listed(fields: list[dict[str, str]]) -> str:
    """Invalid fields in words: ``field: what is wrong``, several joined by '; '."""
    return "; ".join(f"{f['path']}: {f['message']}" for f in fields)


def invalid(fields: list[dict[str, str]], *, lead: str = "") -> InvalidSpec:
    """InvalidSpec naming every invalid field (``fields`` from ``invalid_fields``), after ``lead``."""
    return InvalidSpec(lead + listed(fields), hint="fix the fields named", fields=fields)


def explain(exc: ValidationError) -> str:
    """Invalid input in words (for the CLI and the UI)."""
    return listed(invalid_fields(exc.errors()))


# ------------------------------------------------------------------------------------------------ on the wire

# The HTTP status each error is answered with by the API; a subclass takes its nearest ancestor's.
HTTP_STATUS: dict[type[CoveError], int] = {
    NotFound: 404,
    Unauthorized: 401,
    Forbidden: 403,
    Conflict: 409,
    QuotaExceeded: 409,
    InvalidSpec: 422,
    TooLarge: 413,
    SourceUnavailable: 502,
    RuntimeUnavailable: 422,
    BackendUnavailable: 503,
    DatabaseError: 503,
}


def http_status(exc: CoveError) -> int:
    return next((HTTP_STATUS[k] for k in type(exc).__mro__ if k in HTTP_STATUS), 400)


def to_wire(exc: CoveError) -> dict[str, object]:
    """The API's one error shape: ``{"error": {"type", "message", "next", "fields"?, "generation"?}}``."""
    error: dict[str, object] = {"type": type(exc).__name__, "message": exc.message, "next": exc.hint}
    if exc.fields:
        error["fields"] = exc.fields
    if isinstance(exc, Stale):
        error["generation"] = exc.generation
    return {"error": error}


def _known() -> dict[str, type[CoveError]]:
    found: dict[str, type[CoveError]] = {}
    todo: list[type[CoveError]] = [CoveError]
    while todo:
        kind = todo.pop()
        found[kind.__name__] = kind
        todo.extend(kind.__subclasses__())
    return found


def from_wire(status: int, body: object) -> CoveError:
    """The error an API answer carries, as the same class the server raised (a client sees the server's tree);
    an answer not in Cove's shape (a proxy's page) becomes the class its status means."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        kind = next((k for k, v in HTTP_STATUS.items() if v == status), CoveError)
        return kind(f"the Cove API answered HTTP {status}")
    kind = _known().get(str(error.get("type")), CoveError)
    message, hint = str(error.get("message", "")), str(error.get("next") or "")
    fields = [dict(f) for f in error.get("fields") or [] if isinstance(f, dict)]
    if kind is Stale:
        return Stale(message, generation=int(error.get("generation") or 0), hint=hint)
    return kind(message, hint=hint, fields=fields)
