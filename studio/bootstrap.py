"""Opening Cove's state: the database migrated, built-in images seeded, the configured pools made and (run locally)
the machine's pool detected."""

from __future__ import annotations

from pydantic import ValidationError

from studio import machine
from studio.db import Database, open_database
from studio.errors import InvalidSpec, explain
from studio.models import PoolSpec
from studio.services import images, pools
from studio.settings import Settings
from studio.values import DEFAULT_CLUSTER


def configured_pools(settings: Settings) -> list[PoolSpec]:
    specs = []
    for i, raw in enumerate(settings.pools):
        try:
            specs.append(PoolSpec.model_validate(raw))
        except ValidationError as exc:
            raise InvalidSpec(
                f"pool {raw.get('name', i)!r} in COVE_POOLS is invalid: {explain(exc)}",
                hint="fix the pool's definition (the Helm chart's `pools`)",
            ) from exc
    return specs


def open_studio(settings: Settings) -> Database:
    settings.ensure_dirs()
    specs = configured_pools(settings)  # refuse bad pools before touching the database
    db = open_database(settings.db_url)
    images.ensure_builtin_images(db=db)
    if settings.backend == "local":
        pools.sync_detected_pools(db=db, cluster=DEFAULT_CLUSTER, detected=[machine.capacity()])
    pools.sync_configured_pools(db=db, specs=specs)
    return db
