"""warm-up safety: rejected versions, and which samples a model has served

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import controlplane.store.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("warmup_configs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rejected_at", controlplane.store.base.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column("rejected_reason", sa.Text(), nullable=True))
    op.create_table(
        "warmup_proofs",
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("at", controlplane.store.base.UTCDateTime(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("model", "key", name=op.f("pk_warmup_proofs")),
    )


def downgrade() -> None:
    op.drop_table("warmup_proofs")
    with op.batch_alter_table("warmup_configs", schema=None) as batch_op:
        batch_op.drop_column("rejected_reason")
        batch_op.drop_column("rejected_at")
