"""models and load events

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import controlplane.store.base

#: 64-bit on PostgreSQL (its INTEGER is 32-bit: memory sizes pass 2**31); SQLite's INTEGER is
#: 64-bit already and stays what it was
_BIGINT = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state_since", controlplane.store.base.UTCDateTime(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("memory_bytes", _BIGINT, nullable=True),
        sa.Column("load_s", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("instance", "name", name=op.f("uq_models_instance_name")),
    )
    op.create_table(
        "load_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("started_at", controlplane.store.base.UTCDateTime(), nullable=False),
        sa.Column("finished_at", controlplane.store.base.UTCDateTime(), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("triton_s", sa.Double(), nullable=True),
        sa.Column("memory_bytes", _BIGINT, nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"],
            name=op.f("fk_load_events_model_id_models"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_load_events")),
    )
    with op.batch_alter_table("load_events", schema=None) as batch_op:
        batch_op.create_index("ix_load_events_model_started", ["model_id", "started_at"])


def downgrade() -> None:
    with op.batch_alter_table("load_events", schema=None) as batch_op:
        batch_op.drop_index("ix_load_events_model_started")
    op.drop_table("load_events")
    op.drop_table("models")
