"""APScheduler's job store, kept in memory and persisted through the write-behind.

Why not APScheduler's ``SQLAlchemyJobStore``: it runs SQL on the event loop at every wake-up
(``get_due_jobs``, ``update_job``), so a stalled disk stalls the gateway with it; and
``BaseScheduler._process_jobs`` (3.11) guards only ``get_due_jobs``: an ``update_job`` that
raises (disk full) escapes ``wakeup``, whose timer is then never armed again -- the
scheduler stays asleep for good. Here every call APScheduler makes is answered from memory;
each change is queued (one pending write per job: the newest state), and the rows are read
once at start, in the same pickled format, so jobs persisted by either store carry over.
"""

from __future__ import annotations

import logging
import pickle
from functools import partial
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.util import datetime_to_utc_timestamp

from controlplane.store.database import Database
from controlplane.store.jobs import JobRows

log = logging.getLogger(__name__)


class QueuedJobStore(MemoryJobStore):  # type: ignore[misc]
    def __init__(self, database: Database) -> None:
        super().__init__()
        self.rows = JobRows(database)
        self._loaded: list[tuple[str, bytes]] = []
        #: job id -> the newest (next run time, state) to persist, None: delete its row
        self._latest: dict[str, tuple[float | None, bytes] | None] = {}

    async def load(self) -> None:
        """Read the persisted jobs (before the scheduler starts this store)."""
        self._loaded = await self.rows.db.run(self.rows.load_all)

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        for job_id, state in self._loaded:
            try:
                job = self._reconstitute(state)
            except Exception:  # a job whose function is gone, say: as SQLAlchemyJobStore does
                log.exception("unable to restore job %r: removing it", job_id)
                self._queue(job_id, None)
                continue
            MemoryJobStore.add_job(self, job)
        self._loaded = []

    def _reconstitute(self, state: bytes) -> Job:
        job_state = pickle.loads(state)
        job_state["jobstore"] = self
        job = Job.__new__(Job)
        job.__setstate__(job_state)
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job

    def add_job(self, job: Job) -> None:
        super().add_job(job)
        self._persist(job)

    def update_job(self, job: Job) -> None:
        super().update_job(job)
        self._persist(job)

    def remove_job(self, job_id: str) -> None:
        super().remove_job(job_id)
        self._queue(job_id, None)

    def remove_all_jobs(self) -> None:
        ids = [job.id for job in self.get_all_jobs()]
        super().remove_all_jobs()
        for job_id in ids:
            self._queue(job_id, None)

    def shutdown(self) -> None:
        # MemoryJobStore.shutdown empties the store through remove_all_jobs, which here would
        # delete every persisted job at every stop: forget them in memory only
        MemoryJobStore.remove_all_jobs(self)

    def _persist(self, job: Job) -> None:
        # pickled here, on the event loop that owns the job, not on the write thread
        state = pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL)
        self._queue(job.id, (datetime_to_utc_timestamp(job.next_run_time), state))

    def _queue(self, job_id: str, value: tuple[float | None, bytes] | None) -> None:
        self._latest[job_id] = value
        self.rows.db.writes.submit("scheduler", partial(self._write, job_id),
                                   key=("scheduler-job", job_id))

    def _write(self, job_id: str) -> None:
        # the newest value when the write runs; kept afterwards (see LifecycleStore)
        value = self._latest[job_id]
        if value is None:
            self.rows.delete(job_id)
        else:
            self.rows.save(job_id, *value)
