"""traffic: requests, usage per minute, shape histogram, payload samples

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

#: 64-bit on PostgreSQL (its INTEGER is 32-bit: a lifetime count passes 2**31); SQLite's
#: INTEGER is 64-bit already and stays what it was
_BIGINT = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payload_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("captured_at", sa.Double(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payload_samples")),
    )
    with op.batch_alter_table("payload_samples", schema=None) as batch_op:
        batch_op.create_index("ix_payload_samples_model_signature", ["model", "signature"])
    op.create_table(
        "requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("arrived_at", sa.Double(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("cold", sa.Boolean(), nullable=False),
        sa.Column("wait_ms", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_requests")),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index("ix_requests_model_arrived", ["model", "arrived_at"])
    op.create_table(
        "shape_stats",
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("count", _BIGINT, nullable=False),
        sa.Column("first_seen", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("model", "signature", name=op.f("pk_shape_stats")),
    )
    op.create_table(
        "usage_minutes",
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("minute", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("cold_starts", sa.Integer(), nullable=False),
        sa.Column("latency_sum_ms", sa.Double(), nullable=False),
        sa.Column("latency_max_ms", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("model", "minute", name=op.f("pk_usage_minutes")),
    )


def downgrade() -> None:
    op.drop_table("usage_minutes")
    op.drop_table("shape_stats")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index("ix_requests_model_arrived")
    op.drop_table("requests")
    with op.batch_alter_table("payload_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_payload_samples_model_signature")
    op.drop_table("payload_samples")
