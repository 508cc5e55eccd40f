"""Model aliases and the promotion gate: alias moves, a model's gate, deployments that follow an alias and their
canaries, and the model version on usage records

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from studio.db import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alias_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(), nullable=True),
        sa.Column("rollback", sa.Boolean(), nullable=False),
        sa.Column("override_reason", sa.String(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alias_moves_model_alias", "alias_moves", ["model_id", "alias", "id"])
    # Added nullable, filled with "no gate" for the models there are, then required.
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("gate", sa.JSON(), nullable=True))
    op.execute(sa.text("UPDATE models SET gate = '{}'"))
    with op.batch_alter_table("models") as batch:
        batch.alter_column("gate", existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("follows", sa.String(), nullable=True))
        batch.add_column(sa.Column("canary_of", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("canary_share", sa.Integer(), nullable=False, server_default="0"))
        batch.create_foreign_key("fk_deployments_canary_of", "deployments", ["canary_of"], ["id"], ondelete="CASCADE")
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("model_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("model_version")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_constraint("fk_deployments_canary_of", type_="foreignkey")
        batch.drop_column("canary_share")
        batch.drop_column("canary_of")
        batch.drop_column("follows")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("gate")
    op.drop_index("ix_alias_moves_model_alias", table_name="alias_moves")
    op.drop_table("alias_moves")
