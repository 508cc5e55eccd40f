"""Opening Cove's state: the database migrated, built-in images seeded, the machine's pool detected."""

from __future__ import annotations

from studio.backends.local import detect_capacity
from studio.db import Database, open_database
from studio.services import images, pools
from studio.settings import Settings


def open_studio(settings: Settings) -> Database:
    settings.ensure_dirs()
    db = open_database(settings.db_url)
    images.ensure_builtin_images(db=db)
    pools.sync_detected_pool(db=db, detected=detect_capacity())
    return db
