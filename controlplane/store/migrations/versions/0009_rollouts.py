"""model versions (active/target) and rollouts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import controlplane.store.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("active", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=True),
        sa.Column("updated_at", controlplane.store.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_model_versions")),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("active", sa.String(length=20), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("verification", sa.JSON(), nullable=True),
        sa.Column("created_at", controlplane.store.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", controlplane.store.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index("ix_rollouts_model", "rollouts", ["model", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_rollouts_model", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("model_versions")
