"""registered clusters, the cluster of each pool, and image builds

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kubeconfig", sa.String(), nullable=False),
        sa.Column("context", sa.String(), nullable=False),
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("server", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("checked_at", studio.db.UTCDateTime(), nullable=True),
        sa.Column("created_at", studio.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clusters_name"), ["name"], unique=True)
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cluster", sa.String(), nullable=False, server_default="default"))
        batch_op.create_index(batch_op.f("ix_pools_cluster"), ["cluster"], unique=False)
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("build_status", sa.String(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("build_message", sa.String(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("build_attempt", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("build_attempt")
        batch_op.drop_column("build_message")
        batch_op.drop_column("build_status")
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pools_cluster"))
        batch_op.drop_column("cluster")
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clusters_name"))
    op.drop_table("clusters")
