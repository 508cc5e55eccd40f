"""users; an owner (and a group) on models, deployments and API keys; keys limited to deployments and expiring;
who did what, on events

The first admin, ``admin``, is made here with no password (``cove up`` sets one and prints it once), and every
object that exists already becomes theirs, so nothing is without an owner.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import studio.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRST_ADMIN = "admin"
OWNED = ("models", "deployments", "api_keys")
SHARED = ("models", "deployments")


def upgrade() -> None:
    users = op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=True),
        sa.Column("created_at", studio.db.UTCDateTime(), nullable=False),
        sa.Column("last_login_at", studio.db.UTCDateTime(), nullable=True),
    )
    op.create_index("ix_users_name", "users", ["name"], unique=True)
    op.bulk_insert(
        users,
        [{"name": FIRST_ADMIN, "role": "admin", "groups": [], "disabled": False, "created_at": studio.db.utcnow()}],
    )
    for table in OWNED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("owner", sa.String(), nullable=False, server_default=FIRST_ADMIN))
            if table in SHARED:
                batch_op.add_column(sa.Column("group", sa.String(), nullable=True))
                batch_op.create_index(f"ix_{table}_group", ["group"], unique=False)
            if table == "api_keys":
                batch_op.add_column(sa.Column("deployments", sa.JSON(), nullable=True))
                batch_op.add_column(sa.Column("expires_at", studio.db.UTCDateTime(), nullable=True))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("owner", existing_type=sa.String(), server_default=None)
            batch_op.create_index(f"ix_{table}_owner", ["owner"], unique=False)
            batch_op.create_foreign_key(f"fk_{table}_owner_users", "users", ["owner"], ["name"], ondelete="RESTRICT")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(), nullable=True))
        batch_op.create_index("ix_events_actor", ["actor"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_actor")
        batch_op.drop_column("actor")
    for table in OWNED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_owner_users", type_="foreignkey")
            batch_op.drop_index(f"ix_{table}_owner")
            batch_op.drop_column("owner")
            if table in SHARED:
                batch_op.drop_index(f"ix_{table}_group")
                batch_op.drop_column("group")
            if table == "api_keys":
                batch_op.drop_column("expires_at")
                batch_op.drop_column("deployments")
    op.drop_index("ix_users_name", table_name="users")
    op.drop_table("users")
