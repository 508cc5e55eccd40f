"""The errors Cove raises, and nothing else.

Every error carries a message for the user (what went wrong) and a hint (what to do next). Third-party errors are
translated at the boundary with ``raise … from exc`` so the cause is kept.

    CoveError
    ├── NotFound            a named thing does not exist                       (HTTP 404, CLI exit 1)
    ├── Unauthorized        who asks is not known: no login, a wrong password  (401)
    ├── Forbidden           known, but not allowed: not theirs, not an admin   (403)
    ├── Conflict            it exists already, or is in use                    (409)
    │   └── PortInUse       a port Cove must listen on is taken
    ├── InvalidSpec         the request is malformed: names, numbers, a corrupt model folder (400/422)
    ├── QuotaExceeded       it does not fit the pool: says what is free        (409)
    ├── SourceUnavailable   a model source cannot be reached (offline Hub, missing file)
    ├── RuntimeUnavailable  the runtime cannot run on this backend (no GPU, not installed)
    ├── BackendUnavailable  the backend itself does not answer
    └── DatabaseError       the database cannot be opened or migrated
"""

from __future__ import annotations

from pydantic import ValidationError


class CoveError(Exception):
    """Base of every Cove error: ``message`` says what went wrong, ``hint`` what to do next."""

    hint_default = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.hint_default

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


class InvalidSpec(CoveError):
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


def explain(exc: ValidationError) -> str:
    """Invalid input in words: ``field: what is wrong``, several joined by '; ' (for the CLI and the UI)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
