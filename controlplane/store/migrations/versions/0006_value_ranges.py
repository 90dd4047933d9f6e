"""value ranges of integer inputs, learned from a sample of served requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

#: 64-bit on PostgreSQL (its INTEGER is 32-bit: int64 values and counts pass 2**31);
#: SQLite's INTEGER is 64-bit already and stays what it was
_BIGINT = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "value_ranges",
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("input", sa.String(length=255), nullable=False),
        sa.Column("lo", _BIGINT, nullable=False),
        sa.Column("hi", _BIGINT, nullable=False),
        sa.Column("witnesses", _BIGINT, nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("model", "input"),
    )


def downgrade() -> None:
    op.drop_table("value_ranges")
