"""The scheduler's persisted jobs (``scheduler_jobs``, APScheduler's own row format).

Synchronous: the scheduler's job store (``scheduler/jobstore.py``) reads them once at start
(``Database.run``) and queues every change through the write-behind, so that no call
APScheduler makes on the event loop ever waits on, or fails with, the disk.
"""

from __future__ import annotations

from sqlalchemy import delete, select

from controlplane.store.database import Database
from controlplane.store.dialect import upsert
from controlplane.store.models import SchedulerJob


class JobRows:
    def __init__(self, database: Database) -> None:
        self.db = database

    def load_all(self) -> list[tuple[str, bytes]]:
        """(job id, pickled job state) of every persisted job."""
        with self.db.session() as session:
            return [(job_id, state) for job_id, state in session.execute(
                select(SchedulerJob.id, SchedulerJob.job_state))]

    def save(self, job_id: str, next_run_time: float | None, state: bytes) -> None:
        with self.db.session() as session:
            upsert(session, SchedulerJob,
                   {"id": job_id, "next_run_time": next_run_time, "job_state": state},
                   key=["id"], update=lambda new: {"next_run_time": new.next_run_time,
                                                   "job_state": new.job_state})

    def delete(self, job_id: str) -> None:
        with self.db.session() as session:
            session.execute(delete(SchedulerJob).where(SchedulerJob.id == job_id))
