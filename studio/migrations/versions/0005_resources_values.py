"""a replica's resources and a deployment's autoscaling kept as one value each (JSON), not as columns

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESOURCES = (
    ("cpu", sa.Float()),
    ("memory_mib", sa.Integer()),
    ("gpus", sa.Integer()),
    ("gpu_memory_mib", sa.Integer()),
    ("gpu_cores", sa.Integer()),
)
AUTOSCALE = (("min_replicas", sa.Integer()), ("max_replicas", sa.Integer()), ("target_inflight", sa.Float()))
TARGET_INFLIGHT = 4.0  # the default a deployment without one autoscaled at


def _table(name: str, *columns: tuple[str, sa.types.TypeEngine[Any]]) -> sa.TableClause:
    return sa.table(name, sa.column("id", sa.Integer()), *(sa.column(c, t) for c, t in columns))


def _fold(name: str, *, autoscale: bool) -> None:
    """Write each row's columns into its new JSON values, in the same transaction as the schema change."""
    conn = op.get_bind()
    old = _table(name, *RESOURCES, *(AUTOSCALE if autoscale else ()))
    new = _table(name, ("resources", sa.JSON()), ("autoscale", sa.JSON()))
    for row in conn.execute(sa.select(old)).mappings().all():
        values: dict[str, Any] = {"resources": {c: row[c] for c, _ in RESOURCES}}
        if autoscale:
            lo, hi, target = row["min_replicas"], row["max_replicas"], row["target_inflight"]
            values["autoscale"] = (
                None
                if lo is None or hi is None
                else {"min_replicas": lo, "max_replicas": hi, "target_inflight": target or TARGET_INFLIGHT}
            )
        conn.execute(sa.update(new).where(new.c.id == row["id"]).values(**values))


def _unfold(name: str, *, autoscale: bool) -> None:
    conn = op.get_bind()
    old = _table(name, *RESOURCES, *(AUTOSCALE if autoscale else ()))
    new = _table(name, ("resources", sa.JSON()), ("autoscale", sa.JSON()))
    for row in conn.execute(sa.select(new.c.id, new.c.resources, *([new.c.autoscale] if autoscale else []))).all():
        values = {c: row.resources[c] for c, _ in RESOURCES}
        if autoscale:
            values.update({c: (row.autoscale or {}).get(c) for c, _ in AUTOSCALE})
        conn.execute(sa.update(old).where(old.c.id == row.id).values(**values))


def upgrade() -> None:
    for name, autoscale in (("deployments", True), ("notebooks", False)):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("resources", sa.JSON(), nullable=True))
            if autoscale:
                batch_op.add_column(sa.Column("autoscale", sa.JSON(), nullable=True))
        _fold(name, autoscale=autoscale)
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.alter_column("resources", existing_type=sa.JSON(), nullable=False)
            for column, _ in RESOURCES + (AUTOSCALE if autoscale else ()):
                batch_op.drop_column(column)


def downgrade() -> None:
    for name, autoscale in (("deployments", True), ("notebooks", False)):
        with op.batch_alter_table(name, schema=None) as batch_op:
            for column, kind in RESOURCES:
                batch_op.add_column(sa.Column(column, kind, nullable=True))
            if autoscale:
                for column, kind in AUTOSCALE:
                    batch_op.add_column(sa.Column(column, kind, nullable=True))
        _unfold(name, autoscale=autoscale)
        with op.batch_alter_table(name, schema=None) as batch_op:
            for column, kind in RESOURCES:
                batch_op.alter_column(column, existing_type=kind, nullable=False)
            if autoscale:
                batch_op.drop_column("autoscale")
            batch_op.drop_column("resources")
