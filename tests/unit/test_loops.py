"""Background loops report their last run and last error."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from controlplane.loops import MAX_ERROR_CHARS, Loops, retry_delay


async def test_a_failing_pass_is_recorded_and_the_loop_goes_on() -> None:
    loops, calls, enough = Loops(), [], asyncio.Event()

    async def run() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("x" * 2000)
        if len(calls) == 4:
            enough.set()

    task = asyncio.create_task(loops.every("reconcile", 0.001, run))
    await asyncio.wait_for(enough.wait(), 5)
    await asyncio.sleep(0.01)  # the fourth pass is recorded
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    status = loops.snapshot()["reconcile"]
    assert status["errors"] == 1 and status["runs"] >= 3
    assert status["last_error"].startswith("RuntimeError: xxx")
    assert len(status["last_error"]) == MAX_ERROR_CHARS
    assert status["failing"] is False  # a later pass succeeded
    assert loops.dead() == []


def test_failing_means_the_latest_run_failed() -> None:
    loops = Loops()
    loops.ok("scheduler")
    loops.failed("scheduler", "job x: boom")
    assert loops.status("scheduler").failing
    loops.ok("scheduler")
    assert not loops.status("scheduler").failing


def test_retry_delay_backs_off_from_at_most_a_second_to_the_longer_of_interval_and_10s() -> None:
    assert [retry_delay(30.0, n) for n in range(7)] == [30.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert [retry_delay(5.0, n) for n in (1, 3, 4, 5, 60)] == [1.0, 4.0, 8.0, 10.0, 10.0]
    assert [retry_delay(0.1, n) for n in (0, 1, 2, 3, 20)] == [0.1, 0.1, 0.2, 0.4, 10.0]


async def test_a_failing_loop_backs_off_and_returns_to_its_interval_after_a_success() -> None:
    loops, at, done = Loops(), [], asyncio.Event()

    async def run() -> None:
        at.append(time.monotonic())
        if len(at) <= 4:
            raise OSError(28, "No space left on device")
        if len(at) == 6:
            done.set()

    task = asyncio.create_task(loops.every("flush", 0.05, run))
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gaps = [b - a for a, b in itertools.pairwise(at)]
    # after failures 1..4: 0.05, 0.1, 0.2, 0.4; then the interval again
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2 and gaps[3] >= 0.4
    assert gaps[3] > gaps[0] * 4
    assert gaps[4] < gaps[3] / 2
    status = loops.status("flush")
    assert status.errors == 4 and status.failures == 0 and not status.failing
    assert status.last_error == "OSError: [Errno 28] No space left on device"
