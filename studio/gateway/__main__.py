"""``python -m studio.gateway``: the gateway alone, as one of several replicas behind a load balancer.

Replicas share the database (``COVE_DATABASE_URL``: routes, keys, limits, usage) and the rate-limit counters
(``COVE_REDIS_URL``); without the latter each replica would count alone, and a limit would hold once per replica.
The controller and the API run elsewhere (``cove server``).
"""

from __future__ import annotations

import logging
from functools import partial

import uvicorn

from studio.db import Database, make_engine, migrate
from studio.gateway.app import Gateway
from studio.gateway.connections import header_deadline
from studio.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.redis_url:
        logging.getLogger(__name__).warning(
            "COVE_REDIS_URL is not set: this replica counts rate limits alone (each replica admits the whole limit)"
        )
    # migrated by the gateway at start-up, retried with backoff while the database is down (see /readyz)
    db = Database(make_engine(settings.db_url, connect_timeout_s=settings.db_connect_timeout_s))
    uvicorn.run(
        Gateway(settings=settings, db=db, prepare=partial(migrate, db.engine)),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=header_deadline(settings.header_timeout_s),  # httptools, and silent connections do not hold a place
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        limit_concurrency=settings.max_connections,
    )


if __name__ == "__main__":
    main()
