"""Residency windows: when holding a model is worth its memory, from its forecast.

The price ``gbs_per_cold_start`` says how many GB*seconds of residency one avoided cold start is
worth. Holding a model through an interval pays off when the expected cold starts it avoids are
worth more than the memory it holds; for a short interval that is "the hazard of the next request
times the cold starts that request would cause exceeds the memory price per second", and for a
whole window it is total avoided cold starts against expected GB*s, loading included.

A request that finds the model cold costs ``1 + follow_on`` cold starts: the requests that arrive
during the load are cold too. That is how load time enters the value: a slow load of a bursty
model is worth more to avoid, and a window must open ``load_s`` (plus a margin) before the demand
it covers, since only a model that is ready in time avoids anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from controlplane.policy.forecast import ModelForecast
from controlplane.policy.idle import NextArrival
from controlplane.policy.types import ModelProfile

#: A resident model stays while its hazard is above this fraction of the load threshold, so a
#: model near the threshold is not loaded and unloaded on every small change of its estimate.
HOLD_FACTOR = 0.8
#: At least this share of a periodic model's fires is assumed to stray from its schedule,
#: anywhere in the cycle (more when its recent intervals show outliers).
_MIN_STRAY_FIRES = 0.01
#: Periodic fires later than predicted by more than this many periods count as missed.
_MAX_MISSED_PERIODS = 2


WindowKind = Literal["after_use", "hold", "ahead", "fire", "cycle", "unseen"]


def load_margin_s(profile: ModelProfile) -> float:
    """Slack between a preload's end and the demand it is for (load times vary live)."""
    return 1.0 + 0.1 * profile.load_s


@dataclass(frozen=True, slots=True)
class Window:
    """Hold the model from ``load_at`` (start loading) until ``end``."""

    load_at: float
    ready_by: float
    end: float
    #: Expected cold starts avoided.
    value: float
    #: Expected GB*s held for it.
    cost_gbs: float
    #: ``after_use``: held from the last request on; ``hold``: the rest of a held stretch, where
    #: the value per GB has changed; ``ahead``: a later rise of the hazard (these three are
    #: relative to the last request and move along with newer ones); ``fire``: around one
    #: fire of a periodic model (a request in it is that fire: let go soon after);
    #: ``cycle``: a periodic model cheap enough to hold between fires; ``unseen``: a model not
    #: requested yet, held on a prior belief.
    kind: WindowKind
    why: str

    @property
    def density(self) -> float:
        """Avoided cold starts per GB*s."""
        return self.value / self.cost_gbs if self.cost_gbs > 0 else math.inf

    def rebased(self, old_last: float, new_last: float) -> Window:
        """The same window after a newer request, for windows shaped relative to the last one:
        a keep-after-use window covers the time right after the newer request too."""
        delta = new_last - old_last
        if self.kind == "after_use":
            return Window(min(self.load_at + delta, new_last), min(self.ready_by + delta, new_last),
                          self.end + delta, self.value, self.cost_gbs, self.kind, self.why)
        return Window(self.load_at + delta, self.ready_by + delta, self.end + delta,
                      self.value, self.cost_gbs, self.kind, self.why)


def plan_windows(profile: ModelProfile, forecast: ModelForecast, now: float,
                 gbs_per_cold_start: float, *, resident: bool) -> list[Window]:
    """Windows from ``now`` on during which ``profile``'s model should be held."""
    periodic = periodic_window(profile, forecast, now, gbs_per_cold_start, resident=resident)
    horizon = None if periodic is None else 0.5 * periodic.period_s
    hazard = hazard_windows(profile, forecast, gbs_per_cold_start, horizon_s=horizon)
    return combine(profile, forecast, [w for w in hazard if w.end > now], periodic,
                   gbs_per_cold_start)


@dataclass(frozen=True)
class PeriodicPlan:
    """Windows for a cron-like model's next fire: the fire itself, and before it, when holding
    between fires is worth it, the stretch up to it."""

    windows: tuple[Window, ...]
    period_s: float


def combine(profile: ModelProfile, forecast: ModelForecast, hazard: list[Window],
            periodic: PeriodicPlan | None, gbs_per_cold_start: float) -> list[Window]:
    """Hazard windows plus the periodic ones, if any and worth it."""
    last = forecast.last_t
    if periodic is None or last is None:
        return hazard
    # The idle-time histogram is coarse around the period (bins are ~15% wide, and smoothed);
    # the periodic windows cover the fire, and the strays between fires, far more tightly.
    # Keep from the histogram only the hold right after a request (the rest of a batch).
    windows = [w for w in hazard if w.kind in ("after_use", "hold")
               and w.ready_by < last + 0.5 * periodic.period_s]
    fire = periodic.windows[-1]
    if fire.value * gbs_per_cold_start < fire.cost_gbs:
        return windows
    first = periodic.windows[0]
    gap = first.load_at - windows[-1].end if windows else math.inf
    if 0 < gap <= profile.load_s + load_margin_s(profile):
        # Close enough to the fire: stay rather than leave and come back.
        held = windows.pop()
        windows.append(Window(held.load_at, held.ready_by, first.load_at, held.value,
                              held.cost_gbs + profile.memory_gb * gap, held.kind, held.why))
    windows.extend(periodic.windows)
    return windows


def periodic_window(profile: ModelProfile, forecast: ModelForecast, now: float,
                    gbs_per_cold_start: float, *, resident: bool) -> PeriodicPlan | None:
    """The windows around a cron-like model's next fire; None if it is not periodic. Cheap: it
    only reads the fitted schedule.

    Schedules are not perfect: a share of fires strays anywhere in the cycle (the outliers among
    recent intervals, and at least 1%). When
    even that share is worth the memory (a small model, or a high price), hold the model through
    the cycle instead of unloading between fires; that stretch is a window of its own, worth far
    less per GB than the fire, so that when the budget binds it is the first to go."""
    found = forecast.periodicity()
    if found is None:
        return None
    margin = load_margin_s(profile)
    fire, k = found.next_fire(now, found.jitter_s + margin)
    if k > _MAX_MISSED_PERIODS:
        return None  # the cron stopped or moved; fall back to the idle-time distribution
    confidence = found.confidence * (0.5 if k > 1 else 1.0)  # a missed fire: less sure
    jitter = found.jitter_s
    ready_by = fire - jitter - margin
    gb = profile.memory_gb
    lead = profile.load_s + margin
    multiplier = 1.0 + forecast.follow_on(now)
    end = fire + max(jitter + margin, _late_fire_hold_s(
        jitter, found.confidence * multiplier * gbs_per_cold_start / gb))
    why = (f"periodic every {found.period_s:.0f}s (jitter {jitter:.1f}s), next fire expected "
           f"at {fire:.0f}")
    if resident and ready_by - now <= lead:
        # Cheaper to stay than to unload and load again just in time.
        fire_window = Window(now, ready_by, end, confidence * multiplier,
                             gb * (end - now) * HOLD_FACTOR, "fire", why)
    else:
        fire_window = Window(ready_by - lead, ready_by, end, confidence * multiplier,
                             gb * (end - ready_by + lead), "fire", why)
    stretch = fire_window.load_at - now
    stray = max(_MIN_STRAY_FIRES, 1.0 - found.confidence)
    stray_value = stray * multiplier * stretch / found.period_s
    if stretch > 0 and stray_value * gbs_per_cold_start >= gb * stretch:
        cycle = Window(now, now, fire_window.load_at, stray_value, gb * stretch, "cycle",
                       f"periodic every {found.period_s:.0f}s, cheap enough to hold between "
                       "fires")
        return PeriodicPlan((cycle, fire_window), found.period_s)
    return PeriodicPlan((fire_window,), found.period_s)


def _late_fire_hold_s(jitter_s: float, worth_s: float) -> float:
    """How long after its expected time a fire that has not come yet is still worth waiting
    for. Fires are taken as normal around the schedule with sigma ``jitter_s / 2`` (the jitter
    is a bound of about two sigmas); a share of them strays. Waiting pays while the hazard of
    the late fire, ``phi(z) / (sigma * (1 - Phi(z)))`` weighted by the share that is not
    stray, times what it is worth (``worth_s``: cold starts avoided x price / GB, in seconds)
    exceeds 1. Capped at four sigmas, where the stray share dominates anyway."""
    sigma = max(jitter_s, 1e-3) / 2.0
    for z, density, tail in _NORMAL_STEPS:
        if density * worth_s < sigma * (tail + _LATE_FIRE_STRAY):
            return z * sigma
    return 4.0 * sigma


#: Share of fires assumed late beyond any schedule (keeps the late-fire hazard bounded).
_LATE_FIRE_STRAY = 0.05
#: (z, standard normal density at z, upper tail beyond z) for z = 0, 0.25, .. 3.75.
_NORMAL_STEPS = tuple((z, math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi),
                       0.5 * math.erfc(z / math.sqrt(2.0)))
                      for z in (0.25 * k for k in range(16)))


def hazard_windows(profile: ModelProfile, forecast: ModelForecast, gbs_per_cold_start: float,
                   *, horizon_s: float | None = None) -> list[Window]:
    """Windows from the idle-time distribution, as seen right after the last request: runs of
    intervals whose hazard is worth holding for, joined when close, kept when the run as a
    whole pays for its memory.

    They depend on the forecast only, not on the time of the call: they are relative to the last
    request, so after a newer one they are simply moved along (:meth:`Window.rebased`). Seen
    from the last request the model is resident (it has just served, or is loading for, that
    request), so the run that starts there is "stay" (no load to pay for) and is held down to
    :data:`HOLD_FACTOR` of the threshold: hysteresis against dropping and reloading a model
    whose hazard hovers around the threshold.
    """
    last = forecast.last_t
    if last is None:
        return []
    arrival = forecast.next_arrival(last, horizon_s)
    if arrival is None:
        return []
    price = 1.0 / gbs_per_cold_start  # avoided cold starts a GB*s must buy
    multiplier = 1.0 + forecast.follow_on(last)
    gb = profile.memory_gb
    lead = profile.load_s + load_margin_s(profile)
    threshold = price * gb / multiplier  # hazard per second worth holding for
    covered = arrival.hazard >= threshold
    holding = arrival.hazard >= threshold * HOLD_FACTOR
    if holding[0]:
        stop = int(np.argmin(holding)) if not holding.all() else holding.size
        covered[:stop] = True
    if not covered.any():
        return []
    # Expected seconds held in an interval: until the request or the interval's end.
    held_s = np.where(arrival.hazard > 0, arrival.prob / np.maximum(arrival.hazard, 1e-300),
                      arrival.left * (arrival.end - arrival.start))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], covered.view(np.int8), [0]))))
    prob_sum = np.concatenate(([0.0], np.cumsum(arrival.prob)))
    held_sum = np.concatenate(([0.0], np.cumsum(held_s)))
    # Runs of covered intervals as index ranges [i, j); runs closer than a load time are
    # joined: staying is cheaper than leaving and coming back, and it avoids a pointless
    # unload/load pair.
    runs: list[list[int]] = []
    for i, j in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
        if runs and float(arrival.start[i] - arrival.end[runs[-1][1] - 1]) <= lead:
            runs[-1][1] = j
        else:
            runs.append([i, j])

    windows: list[Window] = []
    for i, j in runs:
        start = float(arrival.start[i])
        p = float(prob_sum[j] - prob_sum[i])
        held = gb * float(held_sum[j] - held_sum[i])
        staying = start - last <= lead
        if staying:
            lead_cost, bar = 0.0, price * HOLD_FACTOR
        else:
            lead_cost, bar = gb * lead * float(arrival.left[i]), price
        if p * multiplier >= bar * (held + lead_cost):
            windows.extend(_split_by_value(arrival, i, j, gb, multiplier, lead, lead_cost,
                                           last, "after_use" if staying else "ahead"))
    return windows


#: A run is split where its hazard moves this much, so that the value per GB of the part that
#: is current (a busy spell, the long quiet after it) is what competes for the budget.
_SPLIT_RATIO = 4.0


def _split_by_value(arrival: NextArrival, i: int, j: int, gb: float, multiplier: float,
                    lead: float, lead_cost: float, last: float,
                    kind: WindowKind) -> list[Window]:
    hazard = arrival.hazard.tolist()
    prob = arrival.prob.tolist()
    pieces: list[tuple[int, int]] = []
    first = i
    level = hazard[i]
    for k in range(i + 1, j):
        h = hazard[k]
        if h > 0 and level > 0 and not (level / _SPLIT_RATIO <= h <= level * _SPLIT_RATIO):
            pieces.append((first, k))
            first, level = k, h
        elif level <= 0 < h:
            level = h
    pieces.append((first, j))
    held_s = np.where(arrival.hazard > 0, arrival.prob / np.maximum(arrival.hazard, 1e-300),
                      arrival.left * (arrival.end - arrival.start)).tolist()
    out: list[Window] = []
    for n, (a, b) in enumerate(pieces):
        start, end = float(arrival.start[a]), float(arrival.end[b - 1])
        p = math.fsum(prob[a:b])
        cost = gb * math.fsum(held_s[a:b])
        if n == 0:
            load_at = last if kind == "after_use" else start - lead
            cost += lead_cost
            piece_kind = kind
        else:
            load_at = start
            piece_kind = "hold"
        out.append(Window(load_at, start, end, p * multiplier, cost, piece_kind,
                          f"P(request {_fmt_span(start - last)}..{_fmt_span(end - last)} "
                          f"after the last one) = {p:.2f}"))
    return out


def _fmt_span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
