"""The hybrid histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020).

Per model, a range-limited histogram of idle times (1-minute bins over ``range_s``, 4 hours in
the paper) gives two windows measured from the end of each request: the pre-warm window (the 5th
percentile, the head) and the keep-alive window (the 99th percentile, the tail). Margins of 10%
make the pre-warm earlier and the keep-alive later. After a request the model is unloaded; it is
loaded again when the pre-warm window ends and held until the keep-alive window ends. A pre-warm
window of zero means: keep the model loaded from the request until the keep-alive end.

When the histogram is not representative the policy falls back:

* too few idle times so far, or bin counts with a coefficient of variation below 2 (no clear
  peak): the standard keep-alive, no pre-warm and the whole histogram range kept alive;
* at least half the idle times out of the histogram's range: the paper forecasts the next idle
  time with ARIMA and uses a 15% margin around it; here the forecast is the geometric mean of the
  last few idle times (documented in docs/policy.md).

The percentiles come from the paper's head/tail rule on bin indexes: pre-warm = head bin start,
keep-alive end = tail bin end. To keep live traffic O(1) per request, the percentiles are
recomputed only after the histogram has grown by about 1% since the last time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from controlplane.policy.baselines import LastUse, load_pinned
from controlplane.policy.timers import TimerHeap
from controlplane.policy.types import Action, ClusterView, ModelProfile, Residency

_HEAD, _TAIL = 0.05, 0.99
_MARGIN = 0.10
_ARIMA_MARGIN = 0.15
_CV_THRESHOLD = 2.0
_OOB_THRESHOLD = 0.5
_MIN_SAMPLES = 5
_RECENT = 10


class _IdleHistogram:
    def __init__(self, n_bins: int, bin_s: float) -> None:
        self.bins = [0] * n_bins
        self.bin_s = bin_s
        self.n = 0  # idle times within range
        self.oob = 0  # idle times beyond it
        self._sq = 0  # sum of squared bin counts, for the CV in O(1)
        self.recent: list[float] = []
        self._recent_next = 0
        self._windows: tuple[float, float] | None = None
        self._windows_n = -1

    def add(self, idle_s: float) -> None:
        if len(self.recent) < _RECENT:
            self.recent.append(idle_s)
        else:
            self.recent[self._recent_next] = idle_s
        self._recent_next = (self._recent_next + 1) % _RECENT
        b = int(idle_s // self.bin_s)
        if b >= len(self.bins):
            self.oob += 1
            return
        c = self.bins[b]
        self._sq += 2 * c + 1
        self.bins[b] = c + 1
        self.n += 1

    def cv(self) -> float:
        k = len(self.bins)
        if self.n == 0 or k < 2:
            return 0.0
        mean = self.n / k
        var = max(0.0, (self._sq - k * mean * mean) / (k - 1))
        return math.sqrt(var) / mean

    def percentile_bin(self, p: float) -> int:
        running = 0
        for i, c in enumerate(self.bins):
            running += c
            if running >= p * self.n:
                return i
        return len(self.bins) - 1

    def windows(self, range_s: float) -> tuple[float, float]:
        """``(pre-warm, keep-alive end)``, both seconds after the last request."""
        total = self.n + self.oob
        if total < _MIN_SAMPLES:
            return 0.0, range_s
        if self.oob / total >= _OOB_THRESHOLD:
            # Stand-in for the paper's ARIMA forecast of the next idle time.
            predicted = math.exp(math.fsum(math.log(max(x, 1.0)) for x in self.recent)
                                 / len(self.recent))
            return predicted * (1 - _ARIMA_MARGIN), predicted * (1 + _ARIMA_MARGIN)
        if self.cv() < _CV_THRESHOLD:
            return 0.0, range_s
        if self._windows is None or total - self._windows_n >= max(1, total // 100):
            head = self.percentile_bin(_HEAD) * self.bin_s * (1 - _MARGIN)
            tail = (self.percentile_bin(_TAIL) + 1) * self.bin_s * (1 + _MARGIN)
            self._windows, self._windows_n = (head, tail), total
        return self._windows


class HybridHistogram:
    """See the module docstring. ``range_s`` (default 4 h) is the swept parameter."""

    name = "hybrid_histogram"

    def __init__(self, models: Mapping[str, ModelProfile], range_s: float = 4 * 3600.0,
                 bin_s: float = 60.0) -> None:
        if range_s < bin_s:
            raise ValueError("range_s must cover at least one bin")
        self.range_s = range_s
        self._bin_s = bin_s
        self._n_bins = max(1, round(range_s / bin_s))
        self._hist: dict[str, _IdleHistogram] = {}
        self._use = LastUse()
        self._gen: dict[str, int] = {}
        self._timers = TimerHeap()

    def _push(self, t: float, model: str, kind: str) -> None:
        self._timers.push(t, model, kind, self._gen[model])

    def observe(self, model: str, t: float) -> None:
        last = self._use.last.get(model)
        self._use.observe(model, t)
        if last is not None and t < last:
            return  # a late arrival from a batch: its idle time is unknown
        hist = self._hist.get(model)
        if hist is None:
            hist = self._hist[model] = _IdleHistogram(self._n_bins, self._bin_s)
        if last is not None:
            hist.add(t - last)
        prewarm, keep_end = hist.windows(self.range_s)
        self._gen[model] = self._gen.get(model, 0) + 1
        if prewarm > 0:
            self._push(t, model, "unload")
            self._push(t + prewarm, model, "load")
        self._push(t + keep_end, model, "unload")

    def on_demand(self, model: str, view: ClusterView) -> list[Action]:
        return self._use.evict_for(model, view, view.budget_mb)

    def plan(self, view: ClusterView) -> list[Action]:
        actions = load_pinned(view)
        unloads: list[Action] = []
        free = view.budget_mb - view.resident_mb()
        retry = []
        for _, _, name, kind, gen in self._timers.pop_due(view.now):
            profile = view.models.get(name)
            if gen != self._gen.get(name) or profile is None or profile.pinned:
                continue
            state = view.state(name)
            if kind == "unload":
                if state is Residency.READY:
                    unloads.append(Action("unload", name, "hybrid histogram: outside the "
                                                          "pre-warm/keep-alive window"))
                    free += profile.memory_mb
                elif state is Residency.LOADING:
                    retry.append(name)
            elif state is Residency.COLD and profile.memory_mb <= free + 1e-9:
                actions.append(Action("load", name, "hybrid histogram: pre-warm window ended"))
                free -= profile.memory_mb
        for name in retry:  # drop it once its load has finished
            self._push(view.now + 1.0, name, "unload")
        return unloads + actions

    def next_wakeup(self, now: float) -> float | None:
        return self._timers.next_live(lambda timer: timer.token == self._gen.get(timer.model))
