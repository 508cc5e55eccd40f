"""a model's production version failing its scheduled re-evaluation: the gate_failing mark

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as table:
        table.add_column(sa.Column("gate_failing", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as table:
        table.drop_column("gate_failing")
