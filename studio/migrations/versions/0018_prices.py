"""prices and budgets: a price per deployment, monthly budgets per user and group, and each usage row's cost

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment", sa.String(), nullable=False),
        sa.Column("input_per_m", sa.BigInteger(), nullable=False),
        sa.Column("output_per_m", sa.BigInteger(), nullable=False),
        sa.Column("hourly", sa.BigInteger(), nullable=False),
        sa.Column("set_by", sa.String(), nullable=False),
        sa.Column("updated_at", studio.db.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("deployment"),
    )
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("warn_at", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(), nullable=False),
        sa.Column("updated_at", studio.db.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("scope", "subject"),
    )
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("cost_micros", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("cost_micros")
    op.drop_table("budgets")
    op.drop_table("prices")
