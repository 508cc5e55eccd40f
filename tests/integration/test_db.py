"""The database: migrations on SQLite and PostgreSQL, upgrades that keep rows, and refusal of newer schemas."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from studio.db import current_revision, head_revision, make_engine, migrate, open_database
from studio.errors import DatabaseError


def test_fresh_database_is_migrated_to_head_and_matches_the_tables(database_url: str) -> None:
    db = open_database(database_url)
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as conn:
        drift = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert drift == [], "models.py and the migrations disagree: write a migration"
    db.dispose()


def test_database_from_an_older_version_is_upgraded_and_keeps_its_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO models (name, description, created_at) VALUES ('old', 'kept', :t)"),
            {"t": "2026-01-01 00:00:00"},
        )
        conn.execute(
            sa.text(
                "INSERT INTO pools (name, purpose, sharing, gpu_model, gpu_count, gpu_memory_mib, slice_mib, cpu_cores,"
                " memory_mib, groups, node_selector, tolerations, detected, created_at) VALUES ('gpu-a', 'serve',"
                " 'whole', 'A100', 8, 81920, 128, 64, 512000, '[]', '{}', '[]', false, '2026-01-01 00:00:00')"
            )
        )
    migrate(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT description FROM models WHERE name = 'old'")).scalar_one() == "kept"
        assert conn.execute(sa.text("SELECT gpu_count FROM pools WHERE name = 'gpu-a'")).scalar_one() == 8
        assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar_one() == 0  # the new table exists
    engine.dispose()


def test_database_written_by_a_newer_cove_is_refused_untouched(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(DatabaseError, match="newer Cove") as caught:
        migrate(engine)
    assert "upgrade Cove" in caught.value.hint
    assert current_revision(engine) == "9999_future"
    engine.dispose()


def test_unreachable_database_says_so() -> None:
    with pytest.raises(DatabaseError, match="cannot open the database") as caught:
        migrate(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    assert "COVE_DATABASE_URL" in caught.value.hint
