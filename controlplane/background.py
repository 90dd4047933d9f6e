"""Tasks a component starts and does not await: kept referenced, cancelled together.

asyncio holds only weak references to tasks, so a task nobody keeps can be collected while it
runs; and a component that stops must not leave its loads or loops running behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task kept until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    async def settle(self) -> None:
        """Wait for the tasks running now to end (their errors are theirs to handle)."""
        await asyncio.gather(*self, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every task and wait until they have ended."""
        tasks = list(self)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
