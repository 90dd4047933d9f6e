"""Per-model timers in a heap, superseded instead of removed.

Policies re-plan a model often; deleting its old timer from a heap is costly, so each timer
carries a token (a generation, a request index) and the policy tells stale from live ones
when they come up. Ties in time keep push order, so runs stay deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import NamedTuple


class Timer(NamedTuple):
    t: float
    seq: int
    model: str
    kind: str
    token: int


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = 0

    def push(self, t: float, model: str, kind: str = "", token: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, Timer(t, self._seq, model, kind, token))

    def pop_due(self, now: float) -> Iterator[Timer]:
        """Timers due by ``now``, earliest first, stale ones included; timers pushed while
        iterating come out too if they are due."""
        while self._heap and self._heap[0].t <= now:
            yield heapq.heappop(self._heap)

    def next_live(self, live: Callable[[Timer], bool]) -> float | None:
        """Time of the earliest timer ``live`` accepts, dropping the stale ones before it."""
        while self._heap:
            if live(self._heap[0]):
                return self._heap[0].t
            heapq.heappop(self._heap)
        return None
