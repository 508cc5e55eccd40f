"""evaluations: a model version's scores on a dataset version's split, with every example

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("split", sa.String(), nullable=False),
        sa.Column("deployment", sa.String(), nullable=False),
        sa.Column("judge", sa.String(), nullable=True),
        sa.Column("against", sa.String(), nullable=True),
        sa.Column("limit", sa.Integer(), nullable=True),
        sa.Column("group", sa.String(), nullable=True, index=True),
        sa.Column("owner", sa.String(), sa.ForeignKey("users.name", ondelete="RESTRICT"), nullable=False, index=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("started_at", studio.db.UTCDateTime(), nullable=True),
        sa.Column("finished_at", studio.db.UTCDateTime(), nullable=True),
        sa.Column(
            "model_version_id",
            sa.Integer(),
            sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "dataset_version_id",
            sa.Integer(),
            sa.ForeignKey("dataset_versions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("scorers", sa.JSON(), nullable=False),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.Column("key_name", sa.String(), nullable=False),
        sa.Column("created_at", studio.db.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
