"""Opening Cove's state: the database migrated, built-in images seeded, the configured pools made and (run locally)
the machine's pool detected.

``open_studio`` does it all at once, failing when the database does not answer. ``cove server`` splits it: what is
wrong for good (an invalid pool) is refused at start-up by ``check_studio``; ``prepare_studio``, which needs the
database, is retried until the database answers (see ``studio.server``)."""

from __future__ import annotations

from pydantic import ValidationError

from studio import machine
from studio.db import Database, make_engine, migrate
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


def check_studio(settings: Settings) -> list[PoolSpec]:
    """What start-up refuses at once, before the database is asked: the folders made, the configured pools valid
    (InvalidSpec naming the pool otherwise)."""
    settings.ensure_dirs()
    return configured_pools(settings)


def prepare_studio(*, db: Database, settings: Settings, specs: list[PoolSpec]) -> None:
    """Migrate ``db`` and seed it (built-in images, pools). Idempotent, so a caller may retry it; raises what the
    database raises when it does not answer (``DatabaseError``, SQLAlchemy's errors)."""
    migrate(db.engine)
    images.ensure_builtin_images(db=db)
    if settings.backend == "local":
        pools.sync_detected_pools(db=db, cluster=DEFAULT_CLUSTER, detected=[machine.capacity()])
    pools.sync_configured_pools(db=db, specs=specs)


def open_studio(settings: Settings) -> Database:
    specs = check_studio(settings)  # refuse bad pools before touching the database
    db = Database(make_engine(settings.db_url, connect_timeout_s=settings.db_connect_timeout_s))
    prepare_studio(db=db, settings=settings, specs=specs)
    return db
