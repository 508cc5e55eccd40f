"""a deployment's memory plan: the flags it added to the runtime args, the KV figures it predicted, and those the
runtime reported

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as table:
        table.add_column(sa.Column("planned_args", sa.JSON(), nullable=False, server_default="[]"))
        table.add_column(sa.Column("kv_planned", sa.JSON(), nullable=True))
        table.add_column(sa.Column("kv_observed", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as table:
        table.drop_column("kv_observed")
        table.drop_column("kv_planned")
        table.drop_column("planned_args")
