"""The store's health: the write probe and the queue, against a disk failing on demand."""

from __future__ import annotations

import time

from controlplane.store.database import Database
from controlplane.store.health import StoreHealth
from tests.support.store_faults import StoreFaults
from tests.support.waiting import until


async def test_a_stalled_disk_shows_as_stalled_within_seconds_and_reading_it_never_waits(
        database: Database) -> None:
    faults = StoreFaults(database)
    health = StoreHealth(database, interval_s=0.2, stall_after_s=0.5)
    health.start()
    try:
        assert await until(lambda: health.probes >= 1, 5)
        assert health.status().state == "ok" and health.last_latency_s is not None
        faults.set("stall")
        t0 = time.monotonic()
        assert await until(lambda: health.status().state == "stalled", 5)
        seen_after = time.monotonic() - t0
        assert 0.5 <= seen_after < 2.0
        t0 = time.monotonic()
        for _ in range(100):
            status = health.status()
            snapshot = health.snapshot()
        assert time.monotonic() - t0 < 0.1  # /healthz and /metrics never wait for the disk
        assert status.reason is not None and "probe write has not returned" in status.reason
        assert snapshot["state"] == "stalled"
        faults.clear()
        assert await until(lambda: health.status().state == "ok", 5)
    finally:
        await health.close()


async def test_a_full_disk_makes_the_store_unwritable_until_the_probe_succeeds_again(
        database: Database) -> None:
    faults = StoreFaults(database)
    health = StoreHealth(database, interval_s=0.1, stall_after_s=1.0)
    health.start()
    try:
        faults.set("full")
        assert await until(lambda: health.status().state == "unwritable", 5)
        assert health.status().reason == "the write probe fails: database or disk is full"
        faults.clear()
        assert await until(lambda: health.status().state == "ok", 5)
        assert health.last_ok is not None and health.probe_error is None
    finally:
        await health.close()


async def test_queued_writes_that_fail_make_it_unwritable_though_the_probe_succeeds(
        database: Database) -> None:
    """A full disk can still take a small write (SQLite reuses its WAL's space) while a
    larger batch fails: the queue's failure counts whatever the probe says."""
    health = StoreHealth(database, interval_s=0.1)
    health.start()
    failing = True

    def batch() -> None:
        if failing:
            raise OSError(28, "No space left on device")

    try:
        done = database.writes.submit("traffic", batch, weight=500)
        assert await until(lambda: health.status().state == "unwritable", 5)
        assert health.probe_error is None
        assert health.status().reason == "queued writes fail: OSError: [Errno 28] No space " \
                                         "left on device"
        assert health.snapshot()["queued"] == {"traffic": 500}
        failing = False
        assert await until(lambda: health.status().state == "ok", 10)
        assert done.result() == "written" and health.snapshot()["written"] == {"traffic": 500}
    finally:
        await health.close()
