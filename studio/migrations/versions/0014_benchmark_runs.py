"""benchmark runs: serving benchmarks of a deployment, stored per model version

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "benchmark_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("replica", sa.Integer(), nullable=False),
        sa.Column("group", sa.String(), nullable=True, index=True),
        sa.Column("owner", sa.String(), sa.ForeignKey("users.name", ondelete="RESTRICT"), nullable=False, index=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("progress", sa.String(), nullable=False),
        sa.Column("started_at", studio.db.UTCDateTime(), nullable=True),
        sa.Column("finished_at", studio.db.UTCDateTime(), nullable=True),
        sa.Column(
            "model_version_id",
            sa.Integer(),
            sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("tokenizer", sa.String(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("max_rate", sa.Float(), nullable=True),
        sa.Column("key_name", sa.String(), nullable=False),
        sa.Column("created_at", studio.db.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("benchmark_runs")
