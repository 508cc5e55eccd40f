"""wake: when a deployment was last asked for, woken, refused a wake, and its last cold start (scale to zero)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("last_request_at", studio.db.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("wake_requested_at", studio.db.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("wake_refused", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("cold_start_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("cold_start_s")
        batch.drop_column("wake_refused")
        batch.drop_column("wake_requested_at")
        batch.drop_column("last_request_at")
