"""Calendar profiles (time of day, day of week) and cron-like periodicity detection."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from controlplane.policy.decay import DecayedBins

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
#: Unix day 0 (1970-01-01) was a Thursday; shifting by 3 days puts Monday at bin 0.
_UNIX_MONDAY_SHIFT_S = 3 * DAY_S


class CyclicProfile:
    """Request rate per calendar bin (e.g. hour of day), with decayed evidence.

    Counts and exposure (time observed) are both kept per bin, so bins seen less often than
    others are not mistaken for quiet ones. Only completed bin intervals enter the profile: a
    burst going on right now must not inflate the factor of the hour it is in, or the model
    would look "popular at this hour" for the rest of the hour just because it is busy.
    """

    def __init__(self, n_bins: int, period_s: float, *, offset_s: float, half_life_s: float,
                 min_exposure_s: float, pseudo_count: float = 2.0,
                 clip: tuple[float, float] = (0.2, 5.0)) -> None:
        self.n_bins = n_bins
        self.period_s = period_s
        self._bin_s = period_s / n_bins
        self._offset = offset_s
        self._counts = DecayedBins(n_bins, half_life_s)
        self._exposure = DecayedBins(n_bins, half_life_s)
        self._min_exposure = min_exposure_s
        self._pseudo = pseudo_count
        self._clip = clip
        self._seg_start: float | None = None  # start of the bin interval still being filled
        self._seg_count = 0.0
        self._exposure_total = 0.0

    def bin_of(self, t: float) -> int:
        return int(((t + self._offset) % self.period_s) // self._bin_s)

    def bins_of(self, t: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        idx = ((t + self._offset) % self.period_s) // self._bin_s
        return np.minimum(idx.astype(np.intp), self.n_bins - 1)

    def _segment_end(self, t: float) -> float:
        phase = (t + self._offset) % self._bin_s
        end = t - phase + self._bin_s
        # Float rounding at a boundary could give an empty interval; never stand still.
        return end if end > t else t + self._bin_s

    def _close_segments(self, t: float) -> None:
        """Move every bin interval that ended by ``t`` into the profile."""
        if self._seg_start is None:
            self._seg_start = t
            return
        start = self._seg_start
        end = self._segment_end(start)
        if t < end:
            return
        # The interval being filled ends: it carries the staged arrivals.
        self._counts.add(self.bin_of(start), end, self._seg_count)
        self._add_exposure(self.bin_of(start), end, end - start)
        self._seg_count = 0.0
        start = end
        whole_periods = math.floor((t - start) / self.period_s)
        if whole_periods > 0:  # a long silence: add whole cycles in one step
            mid = start + whole_periods * self.period_s / 2
            for b in range(self.n_bins):
                self._add_exposure(b, mid, whole_periods * self._bin_s)
            start += whole_periods * self.period_s
        while True:
            end = self._segment_end(start)
            if t < end:
                break
            self._add_exposure(self.bin_of(start), end, end - start)
            start = end
        self._seg_start = start

    def _add_exposure(self, b: int, t: float, seconds: float) -> None:
        self._exposure.add(b, t, seconds)
        self._exposure_total += seconds

    def add(self, t: float) -> None:
        if self._seg_start is not None and t < self._seg_start:
            # A late arrival from a batch whose interval has already been closed.
            self._counts.add(self.bin_of(t), t)
            return
        self._close_segments(t)
        self._seg_count += 1.0

    def advance(self, now: float) -> None:
        if self._seg_start is not None and now >= self._seg_start:
            self._close_segments(now)

    def stored_numbers(self) -> int:
        return len(self._counts) + len(self._exposure)

    @property
    def exposure_s(self) -> float:
        """Seconds of history behind the profile (not decayed)."""
        return self._exposure_total

    @property
    def active(self) -> bool:
        return self._exposure_total >= self._min_exposure

    def factors(self, now: float) -> list[float]:
        """Per-bin rate relative to the mean rate (1.0 everywhere until there is evidence)."""
        self.advance(now)
        if not self.active:
            return [1.0] * self.n_bins
        counts = self._counts.values(now)
        exposure = self._exposure.values(now)
        total_exposure = math.fsum(exposure)
        if total_exposure <= 0:
            return [1.0] * self.n_bins
        mean_rate = math.fsum(counts) / total_exposure
        if mean_rate <= 0:
            return [1.0] * self.n_bins
        low, high = self._clip
        # Shrink each bin toward the mean with a few pseudo-arrivals, so that thin evidence
        # (a rarely used model, a bin seen once) stays close to 1.
        return [min(high, max(low, (c + self._pseudo) / (e * mean_rate + self._pseudo)))
                for c, e in zip(counts, exposure, strict=True)]

    def rates(self, now: float) -> list[float]:
        """Requests per second in each bin (completed intervals only)."""
        self.advance(now)
        counts = self._counts.values(now)
        exposure = self._exposure.values(now)
        return [c / e if e > 0 else 0.0 for c, e in zip(counts, exposure, strict=True)]


def time_of_day_profile(epoch_offset_s: float, half_life_s: float) -> CyclicProfile:
    return CyclicProfile(24, DAY_S, offset_s=epoch_offset_s, half_life_s=half_life_s,
                         min_exposure_s=0.5 * DAY_S)


def day_of_week_profile(epoch_offset_s: float, half_life_s: float) -> CyclicProfile:
    # A weekly shape needs weeks of evidence; before that it would mistake a change of
    # pattern (today differs from yesterday) for a weekday effect.
    return CyclicProfile(7, WEEK_S, offset_s=epoch_offset_s + _UNIX_MONDAY_SHIFT_S,
                         half_life_s=half_life_s, min_exposure_s=2 * WEEK_S)


class PeriodDetector:
    """Detects cron-like arrivals from the times of recent "fires".

    A fire is a request after at least ``min_gap_s`` of silence, so a client that sends a small
    batch every five minutes is one fire every five minutes. The period is the typical interval
    between fires; the phase is a least-squares fit of the fire times on their cycle numbers, so
    the predicted next fire carries the jitter of one fire rather than of two (which predicting
    from the last fire alone would). Memory is a fixed ring of the last ``size`` fire times.
    """

    def __init__(self, *, size: int = 10, min_gap_s: float = 15.0, min_period_s: float = 20.0,
                 min_fires: int = 5, max_rel_spread: float = 0.25) -> None:
        self._fires: list[float] = []
        self._size = size
        self._next = 0
        self._min_gap = min_gap_s
        self._min_period = min_period_s
        self._min_fires = min_fires
        self._max_spread = max_rel_spread
        self.last_fire: float | None = None
        self._cache: Periodicity | None = None
        self._cache_valid = True

    def stored_numbers(self) -> int:
        return len(self._fires)

    def add(self, t: float, idle_s: float | None) -> None:
        """Record a request at ``t`` that followed ``idle_s`` of silence (None: the first)."""
        if idle_s is not None and idle_s < self._min_gap:
            return
        if self.last_fire is not None and t <= self.last_fire:
            return
        if len(self._fires) < self._size:
            self._fires.append(t)
        else:
            self._fires[self._next] = t
        self._next = (self._next + 1) % self._size
        self.last_fire = t
        self._cache_valid = False

    def period(self) -> Periodicity | None:
        """The model's schedule when recent fires are regular, else None."""
        if self._cache_valid:
            return self._cache
        self._cache_valid = True
        self._cache = self._fit()
        return self._cache

    def _fit(self) -> Periodicity | None:
        if len(self._fires) < self._min_fires:
            return None
        fires = sorted(self._fires)
        intervals = [b - a for a, b in itertools.pairwise(fires)]
        median = _median(intervals)
        if median < self._min_period:
            return None
        spread = 1.4826 * _median([abs(x - median) for x in intervals])  # robust sigma
        tolerance = max(3.0 * spread, 0.01 * median + 0.5)
        if tolerance > self._max_spread * median:
            return None
        inliers = sum(1 for x in intervals if abs(x - median) <= tolerance)
        if inliers < math.ceil(0.75 * len(intervals)):
            return None
        # Fit fire = phase + n * period over the cycle numbers n (last fire: n = 0).
        last = fires[-1]
        cycles = [round((f - last) / median) for f in fires]
        n_mean = math.fsum(cycles) / len(cycles)
        t_mean = math.fsum(fires) / len(fires)
        var = math.fsum((n - n_mean) ** 2 for n in cycles)
        if var <= 0:
            return None
        pairs = list(zip(cycles, fires, strict=True))
        period = math.fsum((n - n_mean) * (f - t_mean) for n, f in pairs) / var
        phase = t_mean - period * n_mean  # fitted time of the last fire
        residuals = sorted(abs(f - (phase + n * period)) for n, f in pairs)
        # Ten fires show only part of the spread, and the fit itself is off by some of it: widen
        # the second largest residual (the largest may be a one-off late or extra fire).
        typical = residuals[-2] if len(residuals) > 2 else residuals[-1]
        jitter = max(1.5 * typical, residuals[-1]) + 0.25
        return Periodicity(period, jitter, inliers / len(intervals), phase)


@dataclass(frozen=True)
class Periodicity:
    period_s: float
    #: How far fires stray from the fitted schedule (seconds).
    jitter_s: float
    #: Share of recent intervals that match the period.
    confidence: float
    #: Fitted time of the last fire; fire k after it is expected at ``phase + k * period_s``.
    phase: float

    def next_fire(self, now: float, slack_s: float = 0.0) -> tuple[float, int]:
        """The first expected fire not yet over (``now - slack`` before it or later), and how
        many fires after the last one it is."""
        k = max(1, math.ceil((now - slack_s - self.phase) / self.period_s))
        return self.phase + k * self.period_s, k


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
