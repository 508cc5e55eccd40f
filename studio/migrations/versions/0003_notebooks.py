"""notebook servers and what they hold of a pool

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notebooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("user", sa.String(), nullable=False),
        sa.Column("profile", sa.String(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("gpu_memory_mib", sa.Integer(), nullable=False),
        sa.Column("gpu_cores", sa.Integer(), nullable=False),
        sa.Column("started_at", studio.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("notebooks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notebooks_name"), ["name"], unique=True)
        batch_op.create_index(batch_op.f("ix_notebooks_pool_id"), ["pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notebooks_user"), ["user"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notebooks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notebooks_user"))
        batch_op.drop_index(batch_op.f("ix_notebooks_pool_id"))
        batch_op.drop_index(batch_op.f("ix_notebooks_name"))
    op.drop_table("notebooks")
