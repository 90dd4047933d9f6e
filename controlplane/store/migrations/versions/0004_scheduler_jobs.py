"""scheduler jobs: APScheduler's job store, under our migrations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Before this migration APScheduler created the table itself, on first start: keep it
    # (it holds the persisted schedule) when it is already there.
    if sa.inspect(op.get_bind()).has_table("scheduler_jobs"):
        return
    op.create_table(
        "scheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_jobs")),
    )
    with op.batch_alter_table("scheduler_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_scheduler_jobs_next_run_time", ["next_run_time"])


def downgrade() -> None:
    with op.batch_alter_table("scheduler_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_scheduler_jobs_next_run_time")
    op.drop_table("scheduler_jobs")
