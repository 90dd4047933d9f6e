"""warm-up: versioned configs and their files, batch statistics, load-record columns

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

import controlplane.store.base

#: 64-bit on PostgreSQL (its INTEGER is 32-bit: a lifetime count passes 2**31); SQLite's
#: INTEGER is 64-bit already and stays what it was
_BIGINT = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_LOAD_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("warmup_version", sa.Integer()),
    ("warmup_s", sa.Double()),
    ("probe_count", sa.Integer()),
    ("probe_s", sa.Double()),
    ("first_probe_ms", sa.Double()),
    ("probe_latency_ms", sa.Double()),
)


def upgrade() -> None:
    op.create_table(
        "batch_stats",
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("executions", _BIGINT, nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("model", "batch_size", name=op.f("pk_batch_stats")),
    )
    op.create_table(
        "warmup_configs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", controlplane.store.base.UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("default", sa.Boolean(), nullable=False),
        sa.Column("coverage", sa.Double(), nullable=False),
        sa.Column("samples", sa.JSON(), nullable=False),
        sa.Column("covered", sa.JSON(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warmup_configs")),
        sa.UniqueConstraint("model", "version", name=op.f("uq_warmup_configs_model_version")),
    )
    op.create_table(
        "warmup_files",
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["config_id"], ["warmup_configs.id"],
            name=op.f("fk_warmup_files_config_id_warmup_configs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("config_id", "path", name=op.f("pk_warmup_files")),
    )
    with op.batch_alter_table("load_events", schema=None) as batch_op:
        for name, type_ in _LOAD_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("load_events", schema=None) as batch_op:
        for name, _ in reversed(_LOAD_COLUMNS):
            batch_op.drop_column(name)
    op.drop_table("warmup_files")
    op.drop_table("warmup_configs")
    op.drop_table("batch_stats")
