"""APScheduler with a store that fails: the wake-up must never die, jobs persist late."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.exc import OperationalError

from controlplane.scheduler import jobs
from controlplane.scheduler.jobstore import QueuedJobStore
from controlplane.store.database import Database
from controlplane.store.jobs import JobRows
from tests.support.store_faults import StoreFaults
from tests.support.waiting import until

runs: list[str] = []


async def tick(name: str) -> None:
    runs.append(name)


class FailingUpdates(MemoryJobStore):  # type: ignore[misc]
    """update_job raises as SQLAlchemyJobStore's does on a full disk, while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    def update_job(self, job: Any) -> None:
        if self.failing:
            raise OperationalError("UPDATE scheduler_jobs", {}, sqlite3.OperationalError(
                "database or disk is full"))
        super().update_job(job)


async def _runs_during_and_after_a_fault(aps: AsyncIOScheduler, store: FailingUpdates,
                                         name: str) -> tuple[int, int]:
    runs.clear()
    aps.start()
    try:
        aps.add_job(tick, "interval", seconds=0.05, args=[name],
                    next_run_time=datetime.now(UTC))
        await asyncio.sleep(0.5)
        during = len(runs)
        store.failing = False  # the disk is back
        await asyncio.sleep(0.5)
        return during, len(runs) - during
    finally:
        aps.shutdown(wait=False)
        await asyncio.sleep(0)


async def test_apschedulers_own_wakeup_dies_for_good_when_update_job_raises() -> None:
    """Why ``jobs._Scheduler`` exists: APScheduler 3.x's _process_jobs guards get_due_jobs
    only; update_job raising escapes wakeup() before it arms the next timer."""
    store = FailingUpdates()
    during, after = await _runs_during_and_after_a_fault(
        AsyncIOScheduler(jobstores={"default": store}, timezone=UTC), store, "vanilla")
    assert 1 <= during <= 2 and after == 0  # asleep for good, though the disk is back


async def test_our_wakeup_is_rearmed_with_back_off_and_reports_each_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs._Scheduler, "RETRY_FIRST_S", 0.05)
    errors: list[BaseException] = []
    store = FailingUpdates()
    aps = jobs._Scheduler(jobstores={"default": store}, timezone=UTC)
    aps.on_error = errors.append
    during, after = await _runs_during_and_after_a_fault(aps, store, "ours")
    # retried after 0.05, 0.1, 0.2 s ... while failing; every 0.05 s once it is back
    assert 3 <= during <= 6 and after >= 3
    assert len(errors) >= 3 and aps.failures == 0
    assert "database or disk is full" in str(errors[0])


async def test_jobs_persist_through_the_write_behind_and_load_back(
        database: Database) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    faults = StoreFaults(database)
    store = QueuedJobStore(database)
    await store.load()
    aps = jobs._Scheduler(jobstores={"default": store}, timezone=UTC)
    aps.start()
    try:
        faults.set("full")
        aps.add_job(tick, "date", run_date=when, id="preload:a", args=["a"])
        aps.add_job(tick, "date", run_date=when, id="preload:b", args=["b"])
        aps.remove_job("preload:b")  # no call raises, nothing waits on the disk
        assert await until(lambda: faults.hits > 0, 5)
        assert JobRows(database).load_all() == []
        faults.clear()
        assert await database.writes.drain(10)
    finally:
        aps.shutdown(wait=False)
        await asyncio.sleep(0.05)  # the shutdown runs on the loop (call_soon_threadsafe)
    assert await database.writes.drain(10)  # a stop deletes nothing
    assert [job_id for job_id, _ in JobRows(database).load_all()] == ["preload:a"]
    again = QueuedJobStore(database)
    await again.load()
    later = jobs._Scheduler(jobstores={"default": again}, timezone=UTC)
    later.start(paused=True)
    try:
        [job] = later.get_jobs()
        assert job.id == "preload:a" and job.next_run_time == when and job.args == ("a",)
    finally:
        later.shutdown(wait=False)
        await asyncio.sleep(0)
