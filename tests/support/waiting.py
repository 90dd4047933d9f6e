"""Waiting for a condition that a background task makes true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(predicate: Callable[[], bool], within_s: float) -> bool:
    """Poll ``predicate`` until it holds or ``within_s`` passes; its last value."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()
