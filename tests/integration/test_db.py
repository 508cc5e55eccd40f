"""The database: migrations on SQLite and PostgreSQL, upgrades that keep rows, and refusal of newer schemas."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, select

from studio.db import Database, current_revision, head_revision, make_engine, migrate, migrating, open_database
from studio.errors import DatabaseError
from studio.models import Deployment, Notebook
from studio.values import Autoscale, Resources


def migrate_down(engine: Engine, revision: str) -> None:
    with migrating(engine) as config:
        command.downgrade(config, revision)


def test_fresh_database_is_migrated_to_head_and_matches_the_tables(empty_database_url: str) -> None:
    db = open_database(empty_database_url)
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as conn:
        drift = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert drift == [], "models.py and the migrations disagree: write a migration"
    db.dispose()


def test_database_from_an_older_version_is_upgraded_and_keeps_its_rows(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
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


def test_database_written_by_a_newer_cove_is_refused_untouched(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
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


STAMP = "2026-01-01 00:00:00"


def insert_model_with_a_version(conn: sa.Connection) -> None:
    """Model 'm' with version 1, written as the earliest revisions stored them (raw SQL: no table classes)."""
    conn.execute(sa.text("INSERT INTO models (name, description, created_at) VALUES ('m', '', :t)"), {"t": STAMP})
    conn.execute(
        sa.text(
            "INSERT INTO model_versions (model_id, version, source_kind, source, path, size_bytes, architecture,"
            " model_type, created_at) VALUES (1, 1, 'local', '/m', '/m', 0, '', '', :t)"
        ),
        {"t": STAMP},
    )


def test_resources_and_autoscaling_kept_as_columns_become_values_and_back(empty_database_url: str) -> None:
    """0005 folds a deployment's and a notebook's resource columns (and a deployment's autoscaling bounds) into one
    value each, row by row; downgrading unfolds them again."""
    engine = make_engine(empty_database_url)
    migrate(engine, "0004")
    stamp = {"t": STAMP}
    with engine.begin() as conn:
        insert_model_with_a_version(conn)
        conn.execute(
            sa.text(
                "INSERT INTO images (name, version, runtime, ref, health_path, builtin, description, created_at,"
                " build_status, build_message, build_attempt) VALUES ('rt', '1', 'custom', 'example.com/rt', '/health',"
                " false, '', :t, '', '', 0)"
            ),
            stamp,
        )
        conn.execute(
            sa.text(
                "INSERT INTO pools (name, purpose, sharing, gpu_model, gpu_count, gpu_memory_mib, slice_mib, cpu_cores,"
                " memory_mib, groups, node_selector, tolerations, detected, created_at, cluster) VALUES ('gpu', 'any',"
                " 'hami', 'L4', 2, 23034, 128, 16, 65536, '[]', '{}', '[]', false, :t, 'default')"
            ),
            stamp,
        )
        deployment = (
            "INSERT INTO deployments (name, model_version_id, image_id, pool_id, runtime_args, cpu, memory_mib, gpus,"
            " gpu_memory_mib, gpu_cores, replicas, min_replicas, max_replicas, target_inflight, generation, deleting,"
            " status, ready_replicas, endpoints, upstream_model, message, observed_generation, status_at, created_at,"
            " updated_at) VALUES (:name, 1, 1, 1, '[]', :cpu, 4096, 0, :slice, :cores, 2, :lo, :hi, :target, 1, false,"
            " 'Pending', 0, '[]', '', '', 0, :t, :t, :t)"
        )
        conn.execute(
            sa.text(deployment),
            stamp | {"name": "sliced", "cpu": 1.5, "slice": 4096, "cores": 30, "lo": 1, "hi": 3, "target": 2.5},
        )
        conn.execute(
            sa.text(deployment),
            stamp | {"name": "fixed", "cpu": 2, "slice": 0, "cores": 0, "lo": None, "hi": None, "target": None},
        )
        conn.execute(
            sa.text(
                'INSERT INTO notebooks (name, "user", profile, pool_id, cpu, memory_mib, gpus, gpu_memory_mib,'
                " gpu_cores, started_at) VALUES ('ada', 'ada', 'gpu-1', 1, 4, 16384, 1, 0, 0, :t)"
            ),
            stamp,
        )
    migrate(engine)
    db = Database(engine)
    with db.session() as session:
        rows = {d.name: d for d in session.exec(select(Deployment))}
        notebook = session.exec(select(Notebook)).one()
    assert rows["sliced"].resources == Resources(cpu=1.5, memory_mib=4096, gpu_memory_mib=4096, gpu_cores=30)
    assert rows["sliced"].autoscale == Autoscale(min_replicas=1, max_replicas=3, target_inflight=2.5)
    assert (rows["fixed"].resources, rows["fixed"].autoscale) == (Resources(cpu=2, memory_mib=4096), None)
    assert notebook.resources == Resources(cpu=4, memory_mib=16384, gpus=1)

    migrate_down(engine, "0004")
    with engine.connect() as conn:
        got = conn.execute(
            sa.text(
                "SELECT name, cpu, memory_mib, gpu_memory_mib, gpu_cores, min_replicas, max_replicas, target_inflight"
                " FROM deployments ORDER BY name"
            )
        ).all()
        assert [tuple(r) for r in got] == [
            ("fixed", 2.0, 4096, 0, 0, None, None, None),
            ("sliced", 1.5, 4096, 4096, 30, 1, 3, 2.5),
        ]
        assert tuple(conn.execute(sa.text("SELECT cpu, gpus FROM notebooks")).one()) == (4.0, 1)
    engine.dispose()


def test_existing_objects_become_the_first_admins_and_nothing_is_lost(empty_database_url: str) -> None:
    """0006 adds users and owners: what exists belongs to ``admin`` (made with no password, for `cove up` to set),
    and on SQLite the tables it copies keep the rows that refer to them (a model's versions, a key's usage)."""
    engine = make_engine(empty_database_url)
    migrate(engine, "0005")
    stamp = {"t": STAMP}
    with engine.begin() as conn:
        insert_model_with_a_version(conn)
        conn.execute(
            sa.text("INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES ('app', 'cove-x', 'h', :t)"),
            stamp,
        )
        conn.execute(
            sa.text(
                "INSERT INTO usage_records (api_key_id, deployment, endpoint, stream, status_code, prompt_tokens,"
                " completion_tokens, estimated, latency_ms, created_at) VALUES (1, 'd', 'chat.completions', false,"
                " 200, 3, 4, false, 1.5, :t)"
            ),
            stamp,
        )
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name, role, password_hash FROM users")).all() == [("admin", "admin", None)]
        assert conn.execute(sa.text('SELECT name, owner, "group" FROM models')).all() == [("m", "admin", None)]
        assert conn.execute(sa.text("SELECT name, owner, deployments FROM api_keys")).all() == [("app", "admin", None)]
        assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 1
        assert conn.execute(sa.text("SELECT api_key_id FROM usage_records")).scalar() == 1

    migrate_down(engine, "0005")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 1
        assert conn.execute(sa.text("SELECT api_key_id FROM usage_records")).scalar() == 1
        assert "owner" not in {c["name"] for c in sa.inspect(conn).get_columns("models")}
    engine.dispose()
