"""The gateway's bounds on request bytes: per request and in total, refused by name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from controlplane.errors import ResourceExhausted
from controlplane.gateway import buffered
from controlplane.gateway.buffered import Buffered, default_max_buffered_bytes, memory_limit_bytes


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_bounds_refuse_by_name_and_free_what_they_held(
        monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(buffered, "_malloc_trim", lambda: trims.append(1))
    monkeypatch.setattr(buffered, "TRIM_AFTER_BYTES", 150)
    monkeypatch.setattr(buffered, "TRIM_DELAYS_S", (0.01, 0.02))
    bound = Buffered(max_request_bytes=100, max_buffered_bytes=250)
    with pytest.raises(ResourceExhausted, match=r"101 bytes is over gateway\.max_request_bytes "
                                                r"\(100 bytes; WARMCTL_GATEWAY__MAX_REQUEST"):
        bound.take(101)
    bound.take(100)
    bound.take(100)
    with pytest.raises(ResourceExhausted, match=r"gateway\.max_buffered_bytes \(250 bytes"):
        bound.take(60)
    assert bound.held == 200 and bound.refused == {"max_request_bytes": 1,
                                                   "max_buffered_bytes": 1}
    bound.give(100)
    bound.take(60)
    assert bound.held == 160
    for size in (100, 60):
        bound.give(size)
    # memory handed back after the burst, then once more for what was freed since
    assert await _until(lambda: len(trims) == 2)
    assert (bound.held, bound.peak) == (0, 200)
    bound.take(100)
    bound.take(100)
    bound.give(200)
    bound.take(10)  # a new burst before the trim's first wait is over: no trim now
    await asyncio.sleep(0.1)
    assert trims == [1, 1]
    bound.give(10)  # ... but after it (the peak since the last trim was 200)
    assert await _until(lambda: len(trims) == 4)


def test_the_default_total_bound_is_an_eighth_of_the_memory_we_may_use() -> None:
    limit = memory_limit_bytes()
    assert 0 < limit <= 1 << 50
    assert default_max_buffered_bytes() == limit // 8
