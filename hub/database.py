"""The hub's way into Cove's database: opened (and migrated) once per database URL in the hub's process, shared by
the authenticator and the spawners."""

from __future__ import annotations

from studio.bootstrap import open_studio
from studio.db import Database
from studio.settings import Settings

_open: dict[str, Database] = {}


def studio_database(settings: Settings) -> Database:
    """Cove's database at ``settings.db_url``; the same object for the same URL, a new one for another."""
    if settings.db_url not in _open:
        _open[settings.db_url] = open_studio(settings)
    return _open[settings.db_url]
