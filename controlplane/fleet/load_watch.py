"""Measured load per model, from each request's outcome: rate, recent and steady latency.

Fed per request (the recorder's ``on_observation`` hook, so requests served by gateway
worker processes count too). The replica plan takes the larger of the forecast rate and the
measured one (``placement.py``); the autoscaler reads both latencies to tell saturation
(``scaling.py``). Memory is bounded: rates in 1-second buckets over the window
(:class:`~controlplane.policy.measured.RecentRates`), latencies as a few hundred recent
values and one p50 per minute for the last ten minutes, per model, for at most
``max_models`` models.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

from controlplane.policy.measured import RecentRates
from controlplane.traffic.observation import OK, Observation

#: recent latencies kept per model, and how recent "recent" is (s)
RECENT_SAMPLES = 256
RECENT_S = 30.0
#: per-minute p50s kept per model: the steady p50 is the lowest full minute's
MINUTES = 10
#: a minute's p50 counts once it has this many requests
MIN_SAMPLES = 20


class _Latency:
    def __init__(self) -> None:
        self.recent: deque[tuple[float, float]] = deque(maxlen=RECENT_SAMPLES)
        self.minute = -1
        self.values: list[float] = []
        self.minutes: deque[float] = deque(maxlen=MINUTES)

    def add(self, at: float, latency_s: float) -> None:
        self.recent.append((at, latency_s))
        minute = int(at // 60)
        if minute != self.minute:
            if len(self.values) >= MIN_SAMPLES:
                self.minutes.append(statistics.median(self.values))
            self.minute, self.values = minute, []
        if len(self.values) < 4 * RECENT_SAMPLES:  # bounded; a median of the first is fine
            self.values.append(latency_s)


class LoadWatch:
    def __init__(self, window_s: float, clock: Callable[[], float] = time.time,
                 max_models: int = 10_000) -> None:
        self.rates = RecentRates(window_s, max_models=max_models)
        self.clock = clock
        self.max_models = max_models
        self._latency: dict[str, _Latency] = {}

    def observation(self, o: Observation) -> None:
        """The recorder's per-request hook (cheap: a bucket add and a deque append)."""
        self.rates.observe(o.model, o.arrived_at)
        if o.outcome != OK or o.latency_s is None:
            return
        found = self._latency.get(o.model)
        if found is None:
            if len(self._latency) >= self.max_models:
                return
            found = self._latency[o.model] = _Latency()
        # a request that waited for a load says nothing of how loaded the replicas are
        found.add(o.arrived_at, o.latency_s - (o.wait_s or 0.0))

    def rate(self, model: str) -> float:
        """Requests per second over the window, now."""
        return self.rates.rate(model, self.clock())

    def measured(self) -> dict[str, float]:
        return self.rates.rates(self.clock())

    def p50_recent_s(self, model: str) -> float | None:
        """The p50 of the last ``RECENT_S`` seconds (None under ``MIN_SAMPLES`` requests)."""
        found = self._latency.get(model)
        if found is None:
            return None
        since = self.clock() - RECENT_S
        values = [v for at, v in found.recent if at >= since]
        return statistics.median(values) if len(values) >= MIN_SAMPLES else None

    def p50_steady_s(self, model: str) -> float | None:
        """The lowest per-minute p50 of the last ``MINUTES`` minutes: what the model takes
        when the replicas are not saturated (None before a full minute was measured)."""
        found = self._latency.get(model)
        return min(found.minutes) if found is not None and found.minutes else None
