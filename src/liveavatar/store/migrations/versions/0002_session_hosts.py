"""Session hosts: each session records the API process (node) and host running it; nodes heartbeat.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("node_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("host_id", sa.String(120), nullable=True))
        batch.create_index("ix_sessions_node_id", ["node_id"])
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_nodes_seen_at", "nodes", ["seen_at"])


def downgrade() -> None:
    op.drop_table("nodes")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_node_id")
        batch.drop_column("host_id")
        batch.drop_column("node_id")
