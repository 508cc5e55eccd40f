"""The database: engine, sessions and migrations (SQLite by default, PostgreSQL by URL).

``Database`` is handed to the services, which are the only code that opens sessions. ``open_database`` makes the
engine and brings the schema to the newest Alembic revision, keeping every row; a database written by a newer Cove
is refused rather than touched.
"""

from __future__ import annotations

import enum
import fcntl
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from studio.errors import DatabaseError

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x636F7666  # the PostgreSQL advisory lock key migrations run under (the controller's is the next)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stores naive UTC (the same on SQLite and PostgreSQL) and always returns aware UTC datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use studio.db.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class EnumText(sa.TypeDecorator[enum.StrEnum]):
    """A string enum kept as its value (``"Ready"``, not SQLAlchemy's default of the member's name) and read back as
    the enum: the column stays plain text, so a value added by a later Cove needs no schema change."""

    impl = sa.String
    cache_ok = True

    def __init__(self, enum_class: type[enum.StrEnum]) -> None:
        super().__init__()
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else self.enum_class(value).value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> enum.StrEnum | None:
        return None if value is None else self.enum_class(value)


class ValueJSON(sa.TypeDecorator[BaseModel]):
    """A value type (``studio.values``: Resources, Autoscale) kept as JSON and read back as the value."""

    impl = sa.JSON
    cache_ok = True

    def __init__(self, model: type[BaseModel]) -> None:
        super().__init__()
        self.model = model

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else self.model.model_validate(value).model_dump(mode="json")

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> BaseModel | None:
        return None if value is None else self.model.model_validate(value)


class Database:
    """An engine plus the session factory the services use."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose objects stay readable after commit; rolled back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str, *, connect_timeout_s: float = 5.0) -> Engine:
    """Engine with the pragmas Cove relies on: SQLite in WAL mode with foreign keys and a busy timeout; PostgreSQL
    with a connect timeout (a server that does not answer is an error after ``connect_timeout_s``, not a hang)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"connect_timeout": max(1, round(connect_timeout_s))},  # libpq takes whole seconds
    )


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def _bare_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def _revisions() -> tuple[str | None, frozenset[str]]:
    """The newest revision and every revision this Cove's migrations know. Read once per process: loading the
    migration scripts is most of what opening a database that is already at head costs, and they do not change under
    a running Cove."""
    script = ScriptDirectory.from_config(_bare_config())
    return script.get_current_head(), frozenset(rev.revision for rev in script.walk_revisions())


def head_revision() -> str:
    head, _ = _revisions()
    if head is None:
        raise DatabaseError("no migrations are installed", hint="reinstall Cove")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision``, keeping rows. Refuses a database from a newer Cove. A database already at
    head is only read (its revision), not handed to Alembic."""
    head, known = _revisions()
    try:
        current = current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise DatabaseError(
            f"cannot open the database at {engine.url.render_as_string(hide_password=True)}: {exc.orig}",
            hint="check COVE_DATABASE_URL and that the database server is running",
        ) from exc
    if current is not None and current not in known:
        raise DatabaseError(
            f"the database is at schema revision {current!r}, which this Cove does not know: "
            "it was written by a newer Cove",
            hint="upgrade Cove, or point COVE_DATABASE_URL at another database",
        )
    if current is not None and current == head and revision in ("head", head):
        return  # nothing to do; Alembic would load the scripts and its environment again to find that out
    with one_migrator(engine):
        if revision in ("head", head) and current_revision(engine) == head:
            return  # another process migrated it while this one waited
        with migrating(engine) as config:
            command.upgrade(config, revision)


@contextmanager
def one_migrator(engine: Engine) -> Iterator[None]:
    """Held while migrating, so the server, the UI and the hub starting at once migrate one after another: a
    PostgreSQL advisory lock (freed with its connection, even by a migrator that dies), or ``flock`` on a file beside
    the SQLite database. Waits for another migrator to finish."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield  # a database only this process can open
        return
    with open(f"{database}.migrating", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # freed when closed, or when its process dies
        yield


@contextmanager
def migrating(engine: Engine) -> Iterator[Config]:
    """An Alembic config bound to one connection and transaction, for ``command.upgrade`` / ``downgrade``.

    On SQLite, foreign keys are off while migrations run: a batch migration copies a table and drops the old one, and
    with keys on, that drop would cascade to the rows referring to it (a model's versions, a key's usage). They are
    checked once at the end instead; a violation rolls the whole migration back."""
    config = _alembic_config(engine)
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # outside a transaction, or SQLite ignores it
            conn.commit()
        try:
            with conn.begin():
                config.attributes["connection"] = conn
                yield config
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all() if sqlite else []
                if broken:
                    raise DatabaseError(
                        f"migrating left rows referring to rows that are gone: {broken[:5]}",
                        hint="nothing was changed; report this with the database file",
                    )
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def open_database(url: str, *, connect_timeout_s: float = 5.0) -> Database:
    """Engine for ``url`` with its schema migrated to the newest revision."""
    engine = make_engine(url, connect_timeout_s=connect_timeout_s)
    migrate(engine)
    return Database(engine)
