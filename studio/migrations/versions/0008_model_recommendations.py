"""Recommended deployments on models: per runtime, the image versions, resources and arguments that serve it

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Added nullable, filled with "none yet" for the models there are, then required.
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("recommendations", sa.JSON(), nullable=True))
    op.execute(sa.text("UPDATE models SET recommendations = '[]'"))
    with op.batch_alter_table("models") as batch:
        batch.alter_column("recommendations", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("recommendations")
