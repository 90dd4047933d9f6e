"""Background tasks: kept while they run, waited for by settle, cancelled by close."""

from __future__ import annotations

import asyncio

from controlplane.background import Background


async def test_tasks_are_kept_until_they_end_then_forgotten() -> None:
    background, gate = Background(), asyncio.Event()
    task = background.spawn(gate.wait())
    assert list(background) == [task] and len(background) == 1
    gate.set()
    await background.settle()
    assert task.done() and len(background) == 0


async def test_close_cancels_what_still_runs_and_settle_ignores_errors() -> None:
    background = Background()

    async def fail() -> None:
        raise RuntimeError("its own to handle")

    failing = background.spawn(fail())
    await background.settle()  # does not raise
    assert isinstance(failing.exception(), RuntimeError)
    forever = background.spawn(asyncio.Event().wait())
    await background.close()
    assert forever.cancelled() and len(background) == 0
