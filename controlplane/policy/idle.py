"""The idle-time distribution of one model: the gaps between its consecutive requests, in a
decayed histogram with log-spaced bins from 50 ms to two weeks, so the same structure serves a
model hit every few milliseconds and one used twice a day. Conditioning it on the silence so far
gives the hazard (requests per second expected now) that the forecast and the planner read.

Old evidence halves every day, which alone would take a day to forget a regime that has ended.
So every idle time is also tested against the distribution learned so far
(:mod:`controlplane.policy.changepoint`); at a change point the old evidence is set aside (it
keeps the weight of a few idle times) and the idle times of the new regime count in full, so the
forecast follows within a few requests when the change is stark, a few dozen when it is subtle.

Fixed size and O(1) per idle time; the hazard is recomputed (O(bins)) only when new idle times
carry enough news to move it (:meth:`IdleTimes.news`).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from controlplane.policy.changepoint import ChangeTest
from controlplane.policy.decay import DecayedBins
from controlplane.policy.patterns import DAY_S

IDLE_MIN_S = 0.05
IDLE_BINS_PER_DECADE = 16
IDLE_MAX_S = 14 * DAY_S


def _idle_edges() -> list[float]:
    edges = [0.0, IDLE_MIN_S]
    while edges[-1] < IDLE_MAX_S:
        edges.append(IDLE_MIN_S * 10 ** ((len(edges) - 1) / IDLE_BINS_PER_DECADE))
    return edges


#: Bin ``i`` holds idle times in ``[IDLE_EDGES[i], IDLE_EDGES[i + 1])``; the last bin is open.
IDLE_EDGES: tuple[float, ...] = tuple(_idle_edges())
N_IDLE_BINS = len(IDLE_EDGES)
_LOG_SCALE = IDLE_BINS_PER_DECADE / math.log(10)


def idle_bin(idle_s: float) -> int:
    if idle_s < IDLE_MIN_S:
        return 0
    return min(N_IDLE_BINS - 1, 1 + int(_LOG_SCALE * math.log(idle_s / IDLE_MIN_S)))


def _bin_hi(i: int) -> float:
    return IDLE_EDGES[i + 1] if i + 1 < N_IDLE_BINS else math.inf


def _log_uniform_prior(mass: float, low: float, high: float) -> tuple[float, ...]:
    span = math.log(high / low)
    prior = []
    for i in range(N_IDLE_BINS):
        lo, hi = max(IDLE_EDGES[i], low), min(_bin_hi(i), high)
        prior.append(mass * math.log(hi / lo) / span if hi > lo else 0.0)
    return tuple(prior)


#: Half a pseudo-observation spread log-uniformly over 1 s .. 7 days. It keeps the hazard finite
#: beyond the longest idle time seen, and falling with the silence (roughly 1 / (t ln(7d / t))),
#: which makes an unknown model behave like a size-aware keep-alive until data arrives.
_PRIOR = _log_uniform_prior(0.5, 1.0, 7 * DAY_S)
_PRIOR_ARRAY = np.asarray(_PRIOR)
EDGES_ARRAY = np.asarray(IDLE_EDGES)

#: One future interval of the next-arrival distribution:
#: (start, end, probability of the next request in it, hazard per second), absolute times.
Segment = tuple[float, float, float, float]



#: The last idle times kept (bin, end time) so that, at a change point, those of the new regime
#: can be told from the old evidence.
RECENT_IDLE_TIMES = 32
#: At a change point the old evidence is scaled down to this many idle times: it still shapes
#: the estimates where the new regime has no data yet, but no longer outweighs it.
OLD_REGIME_WEIGHT = 4.0


class IdleTimes:
    """Decayed histogram of idle times, its smoothed hazard, and how much news it has had."""

    def __init__(self, half_life_s: float) -> None:
        self._bins = DecayedBins(N_IDLE_BINS, half_life_s)
        self._half_life = half_life_s
        #: Idle times observed so far.
        self.count = 0
        #: Change points found so far.
        self.changes = 0
        self._test = ChangeTest()
        # A ring of the last idle times' bins and end times, stored flat: as a list of
        # (bin, time) tuples it was a fifth of an active model's memory.
        self._recent_bins: array[int] = array("h")
        self._recent_t: array[float] = array("d")
        #: Cumulative news in the idle times (see :meth:`news`): how much they have moved the
        #: hazard, summed; the hazard and the planner's windows are redone when it has grown.
        self.evidence = 0.0
        self._hazard_cache: _HazardCache | None = None
        #: (the weights' version, idle_s, survival) of the last :meth:`survival` read.
        self._survival: tuple[int, float, float] | None = None

    def stored_numbers(self) -> int:
        cached = self._hazard_cache
        return (len(self._bins) + 2 * RECENT_IDLE_TIMES
                + (0 if cached is None else 3 * len(cached.hazard)))

    def add(self, idle_s: float, t: float) -> None:
        """One idle time ending at ``t``."""
        k = idle_bin(idle_s)
        self.evidence += self.news(idle_s, t)
        # Tested against what was learned before it (the hazard cache: what the planner saw).
        run = 0 if self._hazard_cache is None else self._test.update(self.shorter_share(idle_s))
        self._bins.add(k, t)
        if len(self._recent_t) < RECENT_IDLE_TIMES:
            self._recent_bins.append(k)
            self._recent_t.append(t)
        else:
            self._recent_bins[self.count % RECENT_IDLE_TIMES] = k
            self._recent_t[self.count % RECENT_IDLE_TIMES] = t
        self.count += 1
        if run:
            self._set_aside_old(run, t)

    def _set_aside_old(self, run: int, now: float) -> None:
        """A change point: the last ``run`` idle times are the new regime; what came before
        keeps the weight of :data:`OLD_REGIME_WEIGHT` idle times."""
        n = min(run, len(self._recent_t))
        at = [(self.count - 1 - i) % RECENT_IDLE_TIMES for i in range(n)]
        newest = [(self._recent_bins[i], self._recent_t[i]) for i in at]
        for k, t in newest:
            self._bins.add(k, t, -1.0)
        old = self._bins.total(now)
        if old > OLD_REGIME_WEIGHT:
            self._bins.scale(OLD_REGIME_WEIGHT / old)
        for k, t in newest:
            self._bins.add(k, t, 1.0)
        self.changes += 1
        self.evidence += 1.0  # the hazard and the planner's windows are redone at once

    def shorter_share(self, idle_s: float) -> float:
        """Probability of an idle time shorter than ``idle_s`` under the distribution as of the
        last hazard computation (prior included; 0 before any), interpolated inside the bin
        (log-linearly: the bins are log-spaced)."""
        cached = self._hazard_cache
        if cached is None:
            return 0.0
        at_least = cached.at_least
        total = float(at_least[0])
        if total <= 0:
            return 0.0
        k = idle_bin(idle_s)
        lo, hi = IDLE_EDGES[k], _bin_hi(k)
        if not math.isfinite(hi):
            frac = 0.0
        elif k == 0:
            frac = idle_s / hi
        else:
            frac = math.log(max(idle_s, lo) / lo) / math.log(hi / lo)
        above = float(at_least[k + 1]) if k + 1 < len(at_least) else 0.0
        longer = float(at_least[k]) - frac * (float(at_least[k]) - above)
        return min(1.0, max(0.0, 1.0 - longer / total))

    def news(self, idle_s: float, t: float) -> float:
        """How much a new idle time moves the hazard: ``1 / (n + 1)``, ``n`` the (decayed)
        number of idle times at least as long as its bin's lower edge, prior included. It adds
        one request and one time at risk to every estimate up to its length, and those rest on
        at least ``n`` idle times. So a gap in the well-sampled body of the distribution is
        hardly news, and one in a sparse tail (a new regime: night gaps after a day of bursts)
        is: counting idle times alone would wait for as many new ones as the model has ever
        seen, however little of that evidence is left after decay."""
        cached = self._hazard_cache
        if cached is None:
            return 1.0
        scale = 2.0 ** (-max(0.0, t - cached.at) / self._half_life)
        return float(1.0 / (float(cached.at_least[idle_bin(idle_s)]) * scale + 1.0))

    def survival(self, idle_s: float, now: float) -> float:
        """Observed fraction of idle times longer than ``idle_s`` (1.0 without data)."""
        # Decay scales every weight alike, so the fraction is the same at any read time: it is
        # computed from the stored weights and kept until they change (the explanation reads
        # it for every model in every pass). Sums over the non-zero weights only: the same
        # exactly rounded sums as over every weight.
        bins = self._bins
        cached = self._survival
        if cached is not None and cached[0] == bins.version and cached[1] == idle_s:
            return cached[2]
        stored = bins.raw()
        nonzero = bins.nonzero()
        total = math.fsum([stored[i] for i in nonzero])
        if total <= 0:
            found = 1.0
        else:
            k = idle_bin(idle_s)
            lo, hi = IDLE_EDGES[k], _bin_hi(k)
            inside = stored[k] * ((hi - idle_s) / (hi - lo) if math.isfinite(hi) else 1.0)
            longer = math.fsum([stored[i] for i in nonzero if i > k])
            found = min(1.0, (inside + longer) / total)
        self._survival = (bins.version, idle_s, found)
        return found

    def base_hazard(self, now: float) -> npt.NDArray[np.float64]:
        """The smoothed idle-time hazard per closed bin, recomputed only when it can have
        changed: once the new idle times carry enough news (:meth:`news`), or the decay has
        shifted data against the prior."""
        return self._cache(now).hazard

    def cumulative_hazard(self, idle_s: float, now: float) -> float:
        """Expected requests from the last one up to ``idle_s`` of silence, were none to reset
        the clock: the integral of :meth:`base_hazard` (the last closed bin's hazard goes on
        beyond the last edge). O(1)."""
        cached = self._cache(now)
        k = min(idle_bin(idle_s), len(cached.hazard) - 1)
        return cached.cumulative[k] + cached.hazard_list[k] * (idle_s - IDLE_EDGES[k])

    def _cache(self, now: float) -> _HazardCache:
        cached = self._hazard_cache
        if (cached is not None and self.evidence - cached.evidence < _HAZARD_NEWS
                and abs(now - cached.at) < 0.1 * self._half_life):
            return cached
        data = np.asarray(self._bins.values(now))
        hazard = _smoothed_hazard(data)
        weights = data + _PRIOR_ARRAY
        at_least = weights.sum() - np.concatenate(([0.0], np.cumsum(weights)[:-1]))
        cumulative = np.concatenate(([0.0], np.cumsum(hazard * _WIDTHS)))
        cached = _HazardCache(self.evidence, now, hazard, np.maximum(at_least, 0.0),
                              array("d", hazard.tolist()), array("d", cumulative.tolist()))
        self._hazard_cache = cached
        return cached


@dataclass(frozen=True)
class _HazardCache:
    """The hazard as of its last computation, and what is derived from it."""

    evidence: float
    at: float
    #: Smoothed hazard per closed bin (requests per second).
    hazard: npt.NDArray[np.float64]
    #: Idle times (prior included) at least each bin's lower edge.
    at_least: npt.NDArray[np.float64]
    #: ``hazard`` again, for reads of one element (an array's are cheaper than numpy's; the
    #: doubles stored flat: a list of floats took four times the memory, most of a model's).
    hazard_list: array[float]
    #: Integral of the hazard from 0 to each bin's lower edge.
    cumulative: array[float]


#: The hazard is recomputed once new idle times have moved it by about this share (summed
#: over them; see ``ModelForecast._news``).
_HAZARD_NEWS = 0.05
#: A hazard estimate uses at least this many (decayed) idle times, widening its window of
#: bins until it has them; without that, a sparse histogram has holes that read as "no request
#: can come now" and make the planner drop and reload a model it should simply keep.
_MIN_SAMPLES_PER_ESTIMATE = 3.0
_MAX_HALF_WINDOW = 5  # bins each side: a factor of 10 ** (11 / 16), about 4.9, in idle time
_WIDTHS = np.diff(EDGES_ARRAY)


def _smoothed_hazard(data: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Hazard per bin (requests per second given silence so far) of the closed bins.

    For each bin, the smallest window of neighbouring bins holding enough idle times gives
    hazard = (idle times ending in the window) / (time at risk in the window), with the
    survival function interpolated linearly inside each bin.
    """
    weights = data + _PRIOR_ARRAY
    total = weights.sum()
    if total <= 0:
        return np.zeros(N_IDLE_BINS - 1)
    survival = np.concatenate(([total], total - np.cumsum(weights)))  # at each edge
    survival = np.maximum(survival, 0.0)
    n = N_IDLE_BINS - 1  # closed bins
    at_risk = _WIDTHS * 0.5 * (survival[:n] + survival[1:n + 1])
    cum_mass = np.concatenate(([0.0], np.cumsum(weights[:n])))
    cum_data = np.concatenate(([0.0], np.cumsum(data[:n])))
    cum_risk = np.concatenate(([0.0], np.cumsum(at_risk)))
    idx = np.arange(n)
    hazard = np.zeros(n)
    pending = np.ones(n, dtype=bool)
    for w in range(_MAX_HALF_WINDOW + 1):
        lo = np.maximum(idx - w, 0)
        hi = np.minimum(idx + w + 1, n)
        enough = cum_data[hi] - cum_data[lo] >= _MIN_SAMPLES_PER_ESTIMATE
        take = pending & (enough | (w == _MAX_HALF_WINDOW))
        risk = cum_risk[hi[take]] - cum_risk[lo[take]]
        mass = cum_mass[hi[take]] - cum_mass[lo[take]]
        hazard[take] = np.where(risk > 0, mass / np.maximum(risk, 1e-300), 0.0)
        pending &= ~take
        if not pending.any():
            break
    return hazard


@dataclass(frozen=True)
class NextArrival:
    """Distribution of the next request's time over consecutive intervals (absolute times)."""

    start: npt.NDArray[np.float64]
    end: npt.NDArray[np.float64]
    #: P(the next request falls in the interval), given none before ``start[0]``.
    prob: npt.NDArray[np.float64]
    #: Calendar-adjusted hazard (requests per second) within the interval.
    hazard: npt.NDArray[np.float64]
    #: P(no request before the interval starts).
    left: npt.NDArray[np.float64]
