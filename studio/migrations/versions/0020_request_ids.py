"""request ids: each usage row names the gateway request it meters, once (a replayed spool inserts nothing twice)

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # rows written before have none (NULL): a unique index admits any number of NULLs on SQLite and PostgreSQL
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("request_id", sa.String(), nullable=True))
        batch.create_index("ux_usage_request_id", ["request_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ux_usage_request_id")
        batch.drop_column("request_id")
