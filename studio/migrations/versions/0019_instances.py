"""instance time: spans of replicas a deployment ran (billed by the hour), hourly prices per GPU type, and each
deployment's caps on max_tokens and n

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instance_spans",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("group", sa.String(), nullable=True),
        sa.Column("gpu", sa.String(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("hourly", sa.BigInteger(), nullable=False),
        sa.Column("started_at", studio.db.UTCDateTime(), nullable=False),
        sa.Column("ended_at", studio.db.UTCDateTime(), nullable=True),
    )
    op.create_index("ix_instance_spans_deployment", "instance_spans", ["deployment"])
    op.create_index("ix_instance_spans_ended_at", "instance_spans", ["ended_at"])
    with op.batch_alter_table("prices") as batch:
        batch.add_column(sa.Column("hourly_gpu", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("max_tokens_cap", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("n_cap", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("n_cap")
        batch.drop_column("max_tokens_cap")
    with op.batch_alter_table("prices") as batch:
        batch.drop_column("hourly_gpu")
    op.drop_index("ix_instance_spans_ended_at", table_name="instance_spans")
    op.drop_index("ix_instance_spans_deployment", table_name="instance_spans")
    op.drop_table("instance_spans")
