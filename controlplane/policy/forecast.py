"""Per-model demand forecast, learned from observed arrivals only.

The core is the distribution of idle time (the gap between consecutive requests) in a decayed
histogram with log-spaced bins from 50 ms to two weeks (:mod:`controlplane.policy.idle`), so the
same structure serves a model hit every few milliseconds and one used twice a day. Conditioning
it on the silence so far gives the hazard (requests per second expected now) and the
probability of the next request in any future interval. Alongside it: a cron detector that
pins down periodic clients precisely enough to preload seconds before their next fire, the share
of requests that follow a first one within a load time (they would be cold too), recent and
long-run rates (trend, requests per day), and time-of-day and day-of-week profiles (which also
scale the hazard once they have seen several cycles; see ``_calendar_in_hazard``).

Every structure is fixed-size per model and every update is O(1), so live traffic at thousands
of requests a second costs little, and old evidence halves every ``half_life_s`` (a day), so a
model whose pattern changes is re-learned within a day or so.
"""

from __future__ import annotations

import math

import numpy as np

from controlplane.policy.decay import DecayedRate
from controlplane.policy.idle import (
    EDGES_ARRAY,
    N_IDLE_BINS,
    IdleTimes,
    NextArrival,
    Segment,
    idle_bin,
)
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

class ModelForecast:
    """Everything the planner knows about one model's demand."""

    def __init__(self, *, follow_window_s: float = 10.0, epoch_offset_s: float = 0.0,
                 half_life_s: float = DAY_S, profile_half_life_s: float = 3 * DAY_S) -> None:
        #: Requests arriving this long after a cold one would also be cold (the load time).
        self.follow_window_s = follow_window_s
        self.count = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self._idle = IdleTimes(half_life_s)
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
            self._idle.add(idle, t)
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
        return (self._idle.stored_numbers() + self._tod.stored_numbers()
                + self._dow.stored_numbers() + self._period.stored_numbers())

    @property
    def idle_count(self) -> int:
        """Idle times observed so far."""
        return self._idle.count

    @property
    def changes(self) -> int:
        """Regime changes found in the idle times so far (:mod:`~controlplane.policy.idle`)."""
        return self._idle.changes

    @property
    def evidence(self) -> float:
        """Cumulative news in the idle times (:meth:`IdleTimes.news`); the planner redoes a
        model's windows when it has grown."""
        return self._idle.evidence

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
        return self._idle.survival(idle_s, now)

    def cold_starts_per_day_if_lazy(self, now: float, keepalive_s: float = 600.0) -> float:
        """Cold starts a day if loaded on demand and dropped after ``keepalive_s`` idle."""
        return self.daily(now, keepalive_s)[1]

    def daily(self, now: float, keepalive_s: float = 600.0) -> tuple[float, float]:
        """:meth:`requests_per_day` and :meth:`cold_starts_per_day_if_lazy` together (one
        rate read for both)."""
        per_day = self.requests_per_day(now)
        if per_day == 0.0:
            return 0.0, 0.0  # whatever the rest reads: min(0, 0 * finite >= 0)
        cold = per_day * self.idle_survival(keepalive_s, now) * (1.0 + self.follow_on(now))
        return per_day, min(per_day, cold)

    def hazard_now(self, now: float) -> float:
        """Requests per second expected right now, given the silence since the last one."""
        if self.last_t is None:
            return 0.0
        hazard = float(self._idle.base_hazard(now)[min(idle_bin(max(0.0, now - self.last_t)),
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

        The idle-time distribution gives a base hazard per bin (:mod:`~controlplane.policy.idle`);
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
        hazard_all = self._idle.base_hazard(now)
        if not hazard_all.any():
            return None
        starts = EDGES_ARRAY[k:stop].copy()
        starts[0] = elapsed
        ends = EDGES_ARRAY[k + 1:stop + 1]
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

    def requests_after_one(self, within_s: float, now: float) -> float:
        """Expected further requests within ``within_s`` of a request, from the idle-time
        hazard (its integral from 0: exact for Poisson arrivals, a fair guess otherwise).
        With ``within_s`` a load time: the requests a cold start makes cold too."""
        if self.last_t is None:
            return 0.0
        return self._idle.cumulative_hazard(within_s, now)

    def prob_request_within(self, now: float, horizon_s: float) -> float:
        """P(at least one request in ``[now, now + horizon_s)``), given none since the last.

        O(1), from the cumulative hazard; the calendar factors of ``now`` (once they count)
        scale the whole horizon, which is meant to be minutes, not hours."""
        last = self.last_t
        if last is None:
            return 0.0
        silence = max(0.0, now - last)
        exposure = (self._idle.cumulative_hazard(silence + horizon_s, now)
                    - self._idle.cumulative_hazard(silence, now))
        if self._calendar_in_hazard(self._tod):
            exposure *= self._tod.factors(now)[self._tod.bin_of(now)]
        if self._calendar_in_hazard(self._dow):
            exposure *= self._dow.factors(now)[self._dow.bin_of(now)]
        return min(1.0, max(0.0, -math.expm1(-exposure)))
