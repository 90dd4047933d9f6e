"""Measured request rates: recent (a sliding window) and seasonal (the same time a cycle ago).

:class:`RecentRates` is the "measured" rate the replica plan and the autoscaler take beside the
forecast, so a burst gets replicas within seconds. :class:`SeasonalRates` is a small forecast
for compressed-time simulations (a "day" of minutes), where the planner's hourly time-of-day
profile cannot see the cycle: the rate expected at ``t`` is the rate measured at ``t`` one or
more cycles earlier. Both keep per-model counts in fixed time buckets, never one entry per
request, so memory stays bounded whatever the traffic.
"""

from __future__ import annotations

import math
from collections import OrderedDict


class RecentRates:
    """Requests per second per model over the last ``window_s`` seconds.

    Counts go in 1-second buckets, a ring of ``ceil(window_s)`` per model, so a model costs
    about ``2 * window_s`` numbers. At most ``max_models`` models are tracked; beyond that the
    one observed least recently is forgotten (its rate reads 0). Rates are exact to within the
    1-second bucketing at the window's far edge. Arrivals may come a little out of order (live
    recorders hand them over in batches); one older than the window is ignored.
    """

    def __init__(self, window_s: float, max_models: int = 10000) -> None:
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be positive and finite, got {window_s}")
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
        self.window_s = window_s
        self.max_models = max_models
        self._n = math.ceil(window_s)
        #: model -> (second of each slot, count of each slot); ordered by last observation
        self._models: OrderedDict[str, tuple[list[int], list[int]]] = OrderedDict()

    def observe(self, model: str, at: float) -> None:
        """Count one request of ``model`` at ``at`` (seconds, any epoch)."""
        second = math.floor(at)
        slots = self._models.get(model)
        if slots is None:
            slots = ([-1] * self._n, [0] * self._n)  # -1: no second owns the slot yet
            self._models[model] = slots
            if len(self._models) > self.max_models:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(model)
        seconds, counts = slots
        k = second % self._n
        if seconds[k] == second:
            counts[k] += 1
        elif seconds[k] < second:  # the slot held an older second: reuse it
            seconds[k], counts[k] = second, 1
        # else: older than the window the ring covers, so it would not count anyway

    def count(self, model: str, now: float) -> int:
        """Requests of ``model`` in the window ending at ``now``."""
        slots = self._models.get(model)
        if slots is None:
            return 0
        newest = math.floor(now)
        oldest = newest - self._n + 1
        return sum(c for s, c in zip(*slots, strict=True) if oldest <= s <= newest)

    def rate(self, model: str, now: float) -> float:
        """Requests/s of ``model`` over the window ending at ``now`` (0.0 when unseen)."""
        return self.count(model, now) / self.window_s

    def rates(self, now: float) -> dict[str, float]:
        """Every tracked model with a request in the window -> its requests/s."""
        out = {model: self.rate(model, now) for model in self._models}
        return {model: r for model, r in out.items() if r > 0}


class SeasonalRates:
    """Rates per ``bin_s`` bucket, forecast from the same bucket ``cycles`` periods earlier.

    ``rate_ahead(model, now, horizon_s)`` is the highest mean, over the last ``cycles`` cycles
    that had the bucket, of the buckets overlapping ``[now, now + horizon_s]``; None until a
    whole period has been observed (there is nothing to forecast from). Only completed buckets
    count, so traffic of the bucket in progress never forecasts itself. Memory: at most
    ``cycles * period_s / bin_s + 1`` buckets per model.
    """

    def __init__(self, period_s: float, bin_s: float, cycles: int = 2) -> None:
        if not (period_s > 0 and bin_s > 0 and bin_s <= period_s):
            raise ValueError(f"need 0 < bin_s <= period_s, got {bin_s} and {period_s}")
        if cycles < 1:
            raise ValueError(f"cycles must be at least 1, got {cycles}")
        self.period_s, self.bin_s, self.cycles = period_s, bin_s, cycles
        self._per_period = max(1, round(period_s / bin_s))
        self._counts: dict[str, dict[int, int]] = {}
        self._first: float | None = None

    def observe(self, model: str, at: float) -> None:
        if self._first is None:
            self._first = at
        k = math.floor(at / self.bin_s)
        bins = self._counts.setdefault(model, {})
        bins[k] = bins.get(k, 0) + 1
        if len(bins) > (self.cycles + 1) * self._per_period + 1:
            oldest = k - (self.cycles + 1) * self._per_period
            for old in [b for b in bins if b < oldest]:
                del bins[old]

    def rate_ahead(self, model: str, now: float, horizon_s: float) -> float | None:
        """Highest forecast requests/s of ``model`` over ``[now, now + horizon_s]``."""
        if self._first is None or now - self._first < self.period_s:
            return None
        bins = self._counts.get(model, {})
        current = math.floor(now / self.bin_s)
        first_seen = math.floor(self._first / self.bin_s)
        best = 0.0
        for k in range(current, math.floor((now + max(0.0, horizon_s)) / self.bin_s) + 1):
            past = [k - c * self._per_period for c in range(1, self.cycles + 1)]
            seen = [p for p in past if first_seen < p < current]  # whole buckets only
            if seen:
                best = max(best, sum(bins.get(p, 0) for p in seen) / (len(seen) * self.bin_s))
        return best
