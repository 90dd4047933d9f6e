"""Per-model demand forecast, learned from observed arrivals only.

The core is the distribution of idle time (the gap between consecutive requests) in a decayed
histogram with log-spaced bins from 50 ms to two weeks, so the same structure serves a model hit
every few milliseconds and one used twice a day. Conditioning it on the silence so far gives the
hazard (requests per second expected now) and the probability of the next request in any future
interval. Alongside it: a cron detector that pins down periodic clients precisely enough to
preload seconds before their next fire, the share of requests that follow a first one within a
load time (they would be cold too), recent and long-run rates (trend, requests per day), and
time-of-day and day-of-week profiles (which also scale the hazard once they have seen several
cycles; see ``_calendar_in_hazard``).

Every structure is fixed-size per model and every update is O(1), so live traffic at thousands
of requests a second costs little, and old evidence halves every ``half_life_s`` (a day), so a
model whose pattern changes is re-learned within a day or so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from controlplane.policy.decay import DecayedBins, DecayedRate
from controlplane.policy.patterns import (
    DAY_S,
    CyclicProfile,
    PeriodDetector,
    Periodicity,
    day_of_week_profile,
    time_of_day_profile,
)

#: A calendar profile scales the hazard once it has seen this many of its cycles.
CALENDAR_HAZARD_CYCLES = 4
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
_EDGES_ARRAY = np.asarray(IDLE_EDGES)

#: One future interval of the next-arrival distribution:
#: (start, end, probability of the next request in it, hazard per second), absolute times.
Segment = tuple[float, float, float, float]


class ModelForecast:
    """Everything the planner knows about one model's demand."""

    def __init__(self, *, follow_window_s: float = 10.0, epoch_offset_s: float = 0.0,
                 half_life_s: float = DAY_S, profile_half_life_s: float = 3 * DAY_S) -> None:
        #: Requests arriving this long after a cold one would also be cold (the load time).
        self.follow_window_s = follow_window_s
        self.count = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self._idle = DecayedBins(N_IDLE_BINS, half_life_s)
        #: Idle times observed so far (a cheap "has the forecast changed" signal).
        self.idle_count = 0
        self._half_life = half_life_s
        #: Cumulative news in the idle times (see :meth:`_news`): how much they have moved the
        #: hazard, summed; the hazard and the planner's windows are redone when it has grown.
        self.evidence = 0.0
        #: (evidence, time, hazard per bin, idle times at least each bin's lower edge) as of
        #: the last hazard computation.
        self._hazard_cache: tuple[float, float, npt.NDArray[np.float64],
                                  npt.NDArray[np.float64]] | None = None
        self._period = PeriodDetector()
        self._tod = time_of_day_profile(epoch_offset_s, profile_half_life_s)
        self._dow = day_of_week_profile(epoch_offset_s, profile_half_life_s)
        self._recent = DecayedRate(1800.0)
        self._long = DecayedRate(DAY_S)
        self._burst_start: float | None = None
        self._burst_n = 0
        self._follow: float | None = None

    # -- updates ---------------------------------------------------------------------------

    def observe(self, t: float) -> None:
        last = self.last_t
        idle = None if last is None or t < last else t - last
        self.count += 1
        if self.first_t is None:
            self.first_t = t
        if idle is not None:
            self.evidence += self._news(idle, t)
            self._idle.add(idle_bin(idle), t)
            self.idle_count += 1
        if last is None or idle is not None:  # a late arrival carries no interval
            self._period.add(t, idle)
        self._tod.add(t)
        self._dow.add(t)
        self._recent.add(t)
        self._long.add(t)
        self._track_follow(t, idle, first=last is None)
        if last is None or t > last:
            self.last_t = t

    def _track_follow(self, t: float, idle: float | None, *, first: bool) -> None:
        """Count the requests that land within a load time of the first one after a silence:
        when that first one is cold, they are cold too, so avoiding it is worth 1 + that many."""
        if self._burst_start is not None and t < self._burst_start + self.follow_window_s:
            self._burst_n += 1
            return
        self._finish_burst()
        if first or (idle is not None and idle >= max(60.0, self.follow_window_s)):
            self._burst_start = t
            self._burst_n = 0

    def _finish_burst(self) -> None:
        if self._burst_start is None:
            return
        n = float(self._burst_n)
        self._follow = n if self._follow is None else self._follow + 0.25 * (n - self._follow)
        self._burst_start = None

    def stored_numbers(self) -> int:
        """How many numbers the forecast keeps: fixed, whatever the traffic (for tests)."""
        cached = 0 if self._hazard_cache is None else (len(self._hazard_cache[2])
                                                       + len(self._hazard_cache[3]))
        return (len(self._idle) + self._tod.stored_numbers() + self._dow.stored_numbers()
                + self._period.stored_numbers() + cached)

    # -- what the planner and the explanation read ----------------------------------------

    def follow_on(self, now: float) -> float:
        """Expected extra requests within a load time of the first request after a silence.

        A read, like every method here: a burst whose window has passed counts as finished
        without being closed. Closing it here would drop requests of the burst that arrive
        after the read (the live recorder hands arrivals over in lagging batches), so what
        the policy decides would depend on how often someone reads an explanation."""
        if self._burst_start is not None and now >= self._burst_start + self.follow_window_s:
            n = float(self._burst_n)
            return n if self._follow is None else self._follow + 0.25 * (n - self._follow)
        return self._follow or 0.0

    def periodicity(self) -> Periodicity | None:
        """The schedule of a cron-like model, else None."""
        return self._period.period()

    @property
    def last_fire(self) -> float | None:
        """Time of the last request that followed a silence (the phase of a periodic model)."""
        return self._period.last_fire

    def predicted_next(self, now: float) -> float | None:
        """Next fire time of a periodic model (skipping fires already missed), else None."""
        found = self._period.period()
        if found is None:
            return None
        return found.next_fire(now, found.jitter_s)[0]

    def rate_recent(self, now: float) -> float:
        """Requests per second over roughly the last half hour."""
        return self._recent.rate(now)

    def rate_long(self, now: float) -> float:
        """Requests per second over roughly the last day."""
        return self._long.rate(now)

    def trend(self, now: float) -> float:
        """Recent rate over long-run rate (above 1: getting busier)."""
        long_run = self._long.rate(now)
        return self._recent.rate(now) / long_run if long_run > 0 else 1.0

    def requests_per_day(self, now: float) -> float:
        return self._long.rate(now) * DAY_S

    def time_of_day_rates(self, now: float) -> list[float]:
        """Requests per second for each hour of the day (UTC of the epoch offset)."""
        return self._tod.rates(now)

    def time_of_day_factor(self, t: float, now: float) -> float:
        return self._tod.factors(now)[self._tod.bin_of(t)]

    def day_of_week_factor(self, t: float, now: float) -> float:
        return self._dow.factors(now)[self._dow.bin_of(t)]

    def idle_survival(self, idle_s: float, now: float) -> float:
        """Observed fraction of idle times longer than ``idle_s`` (1.0 without data)."""
        weights = self._idle.values(now)
        total = math.fsum(weights)
        if total <= 0:
            return 1.0
        k = idle_bin(idle_s)
        lo, hi = IDLE_EDGES[k], _bin_hi(k)
        inside = weights[k] * ((hi - idle_s) / (hi - lo) if math.isfinite(hi) else 1.0)
        return min(1.0, (inside + math.fsum(weights[k + 1:])) / total)

    def cold_starts_per_day_if_lazy(self, now: float, keepalive_s: float = 600.0) -> float:
        """Cold starts a day if loaded on demand and dropped after ``keepalive_s`` idle."""
        per_day = self.requests_per_day(now)
        cold = per_day * self.idle_survival(keepalive_s, now) * (1.0 + self.follow_on(now))
        return min(per_day, cold)

    def _news(self, idle_s: float, t: float) -> float:
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
        scale = 2.0 ** (-max(0.0, t - cached[1]) / self._half_life)
        return float(1.0 / (float(cached[3][idle_bin(idle_s)]) * scale + 1.0))

    def _base_hazard(self, now: float) -> npt.NDArray[np.float64]:
        """The smoothed idle-time hazard, recomputed only when it can have changed: once the
        new idle times carry enough news (:meth:`_news`), or the decay has shifted data
        against the prior."""
        cached = self._hazard_cache
        if (cached is not None and self.evidence - cached[0] < _HAZARD_NEWS
                and abs(now - cached[1]) < 0.1 * self._half_life):
            return cached[2]
        data = np.asarray(self._idle.values(now))
        hazard = _smoothed_hazard(data)
        weights = data + _PRIOR_ARRAY
        at_least = weights.sum() - np.concatenate(([0.0], np.cumsum(weights)[:-1]))
        self._hazard_cache = (self.evidence, now, hazard, np.maximum(at_least, 0.0))
        return hazard

    def hazard_now(self, now: float) -> float:
        """Requests per second expected right now, given the silence since the last one."""
        if self.last_t is None:
            return 0.0
        hazard = float(self._base_hazard(now)[min(idle_bin(max(0.0, now - self.last_t)),
                                                   N_IDLE_BINS - 2)])
        if self._calendar_in_hazard(self._tod):
            hazard *= self._tod.factors(now)[self._tod.bin_of(now)]
        if self._calendar_in_hazard(self._dow):
            hazard *= self._dow.factors(now)[self._dow.bin_of(now)]
        return hazard

    @staticmethod
    def _calendar_in_hazard(profile: CyclicProfile) -> bool:
        """Whether a calendar profile has seen enough cycles to scale the hazard.

        The profile describes the model from half a day on, but it moves the hazard only after
        several cycles: the idle-time distribution already holds the long quiet gaps of a
        diurnal model (multiplying by a low night-time factor counts them twice), and one day
        cannot tell a daily pattern from a one-off burst. In 48-hour benchmarks, a factor
        learned from the first day made the decisions worse on every trace tried.
        """
        return profile.exposure_s >= CALENDAR_HAZARD_CYCLES * profile.period_s

    def next_arrival(self, now: float, horizon_s: float | None = None) -> NextArrival | None:
        """The next request's time, given none since the last one, as intervals from ``now``
        up to two weeks after the last request (or ``now + horizon_s``); None before any
        request.

        The idle-time distribution gives a base hazard per bin (see :func:`_smoothed_hazard`);
        the calendar profiles multiply it (a proportional-hazards model), and the interval
        probabilities follow from the scaled hazards.
        """
        last = self.last_t
        if last is None:
            return None
        elapsed = max(0.0, now - last)
        k = idle_bin(elapsed)
        stop = N_IDLE_BINS - 1  # the open-ended last bin gets no interval
        if horizon_s is not None:
            stop = max(k + 1, min(stop, idle_bin(elapsed + horizon_s) + 1))
        hazard_all = self._base_hazard(now)
        if not hazard_all.any():
            return None
        starts = _EDGES_ARRAY[k:stop].copy()
        starts[0] = elapsed
        ends = _EDGES_ARRAY[k + 1:stop + 1]
        widths = np.maximum(ends - starts, 1e-12)
        hazard = hazard_all[k:stop].copy()
        use_tod = self._calendar_in_hazard(self._tod)
        use_dow = self._calendar_in_hazard(self._dow)
        if use_tod or use_dow:
            mids = last + 0.5 * (starts + ends)
            if use_tod:
                hazard *= np.asarray(self._tod.factors(now))[self._tod.bins_of(mids)]
            if use_dow:
                hazard *= np.asarray(self._dow.factors(now))[self._dow.bins_of(mids)]
        exposure = hazard * widths
        left = np.exp(-np.concatenate(([0.0], np.cumsum(exposure)[:-1])))
        prob = left * -np.expm1(-exposure)
        return NextArrival(last + starts, last + ends, prob, hazard, left)

    def next_arrival_segments(self, now: float, horizon_s: float | None = None) -> list[Segment]:
        """:meth:`next_arrival` as a list of ``(start, end, probability, hazard)``."""
        found = self.next_arrival(now, horizon_s)
        if found is None:
            return []
        return list(zip(found.start.tolist(), found.end.tolist(), found.prob.tolist(),
                        found.hazard.tolist(), strict=True))

    def prob_request_within(self, now: float, horizon_s: float) -> float:
        """P(at least one request in ``[now, now + horizon_s)``), given none since the last."""
        found = self.next_arrival(now, horizon_s)
        if found is None:
            return 0.0
        end = now + horizon_s
        left = 1.0
        for start, stop, p, hazard in zip(found.start.tolist(), found.end.tolist(),
                                          found.prob.tolist(), found.hazard.tolist(),
                                          strict=True):
            if stop <= end:
                left -= p
                continue
            if start < end:
                left *= math.exp(-hazard * (end - start))
            break
        return min(1.0, max(0.0, 1.0 - left))


#: The hazard is recomputed once new idle times have moved it by about this share (summed
#: over them; see ``ModelForecast._news``).
_HAZARD_NEWS = 0.05
#: A hazard estimate uses at least this many (decayed) idle times, widening its window of
#: bins until it has them; without that, a sparse histogram has holes that read as "no request
#: can come now" and make the planner drop and reload a model it should simply keep.
_MIN_SAMPLES_PER_ESTIMATE = 3.0
_MAX_HALF_WINDOW = 5  # bins each side: a factor of 10 ** (11 / 16), about 4.9, in idle time
_WIDTHS = np.diff(_EDGES_ARRAY)


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
