"""Custom avatars built through the API or the CLI.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "avatars",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("avatar_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("gender", sa.String(16), nullable=False, server_default=""),
        sa.Column("voice_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("url_from", sa.SmallInteger(), nullable=False, server_default="1"),
        sa.Column("framing", sa.String(16), nullable=False, server_default="presenter"),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("msg", sa.Text(), nullable=False, server_default=""),
        sa.Column("stage", sa.String(100), nullable=False, server_default=""),
        sa.Column("progress", sa.Float(), nullable=False, server_default="0"),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("owner_id", "avatar_id", name="uq_avatar_owner_avatar_id"),
    )
    op.create_index("ix_avatars_owner_id", "avatars", ["owner_id"])
    op.create_index("ix_avatars_avatar_id", "avatars", ["avatar_id"])
    op.create_index("ix_avatars_status", "avatars", ["status"])


def downgrade() -> None:
    op.drop_table("avatars")
