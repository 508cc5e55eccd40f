"""datasets and their versions; fine-tune jobs; a model version's lineage, and the base an adapter version is
served on

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db
from studio.finetuning import TrainSettings
from studio.values import Resources

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _owned() -> list[sa.Column]:
    return [
        sa.Column("group", sa.String(), nullable=True, index=True),
        sa.Column("owner", sa.String(), sa.ForeignKey("users.name", ondelete="RESTRICT"), nullable=False, index=True),
    ]


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False, unique=True, index=True),
        sa.Column("description", sa.String(), nullable=False),
        *_owned(),
        sa.Column("created_at", studio.db.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "dataset_id", sa.Integer(), sa.ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False, index=True),
        sa.Column("source_kind", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("revision", sa.String(), nullable=True),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("builder", sa.String(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("splits", sa.JSON(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("created_at", studio.db.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("dataset_id", "version"),
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("lineage", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("adapter_of_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_model_versions_adapter_of", "model_versions", ["adapter_of_id"], ["id"], ondelete="RESTRICT"
        )
    op.create_table(
        "finetunes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False, unique=True, index=True),
        sa.Column("resources", studio.db.ValueJSON(Resources), nullable=False),
        sa.Column("settings", studio.db.ValueJSON(TrainSettings), nullable=False),
        *_owned(),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", studio.db.UTCDateTime(), nullable=True),
        sa.Column("finished_at", studio.db.UTCDateTime(), nullable=True),
        sa.Column(
            "base_version_id",
            sa.Integer(),
            sa.ForeignKey("model_versions.id", ondelete="RESTRICT"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "dataset_version_id",
            sa.Integer(),
            sa.ForeignKey("dataset_versions.id", ondelete="RESTRICT"),
            nullable=False,
            index=True,
        ),
        sa.Column("pool_id", sa.Integer(), sa.ForeignKey("pools.id", ondelete="RESTRICT"), nullable=False, index=True),
        sa.Column("target_model", sa.String(), nullable=False),
        sa.Column(
            "result_version_id", sa.Integer(), sa.ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("cancelling", sa.Boolean(), nullable=False),
        sa.Column("report_hash", sa.String(), nullable=False),
        sa.Column("created_at", studio.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", studio.db.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("finetunes")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint("fk_model_versions_adapter_of", type_="foreignkey")
        batch.drop_column("adapter_of_id")
        batch.drop_column("lineage")
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
