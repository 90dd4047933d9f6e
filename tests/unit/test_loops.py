"""Background loops report their last run and last error."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.loops import MAX_ERROR_CHARS, Loops


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
