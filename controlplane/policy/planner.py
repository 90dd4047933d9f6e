"""``ours``: hold, preload and drop models by forecast value per byte, under the budget.

Per model the planner keeps residency windows (:mod:`controlplane.policy.windows`): intervals in
which the expected cold starts avoided are worth the memory at the price ``gbs_per_cold_start``,
the policy's one knob. A model is loaded when a window opens (preloads open ``load_s`` plus a
margin before the demand they are for) and unloaded when no window holds it. When the budget
cannot hold every model worth holding, :mod:`controlplane.policy.keeper` decides which stay (by
value per byte), who makes room for a load (by forecast next use) and who comes back after.

Work is event-driven, so that a plan() every few seconds over hundreds of models stays cheap:
a model is looked at when one of its timers fires (a window opens or closes, its windows are due
for a recompute, its load should have finished), right after a request that was the fire a
periodic window waited for, and in a slow scan of every model spread over the passes. Windows
are relative to the last request, so between recomputes newer requests only move them along.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from controlplane.policy.explain import Standing, describe
from controlplane.policy.forecast import ModelForecast
from controlplane.policy.keeper import BudgetKeeper
from controlplane.policy.timers import TimerHeap
from controlplane.policy.types import (
    Action,
    ClusterView,
    ModelDecision,
    ModelProfile,
    Residency,
)
from controlplane.policy.windows import (
    Window,
    combine,
    hazard_windows,
    periodic_window,
)

DEFAULT_GBS_PER_COLD_START = 3000.0
#: Windows of active models are recomputed at least this often (the forecast moves slowly, and
#: the calendar part of a window moved along with newer requests drifts out of place).
_RECOMPUTE_ACTIVE_S = 1200.0
#: ... and those of idle models, so a calendar-driven preload (a morning rise) is found.
_RECOMPUTE_IDLE_S = 3600.0
#: Every model is re-checked this often, to catch loads and unloads the policy did not make.
#: The scan is spread over the passes in between (a share of the models each, in turn), so no
#: pass pays for all of them at once: at 10,000 models a scan in one pass cost twice a pass.
_SCAN_S = 300.0
#: The budget is re-packed at least this often, and after every demand load that evicts.
_PACK_S = 10.0
#: An explanation's figures (requests a day, cold starts a day if lazy) are read at most once
#: per model in this much policy time, unless a request comes: at a fixed time in each such
#: period, staggered per model (``_ModelState.figures_offset``), so every pass reads a share of
#: them. The rates behind them decay with time constants of hours: in a minute they move by
#: under 0.1 %. At 10,000 models, reading them all in every pass was a third of the pass.
_FIGURES_S = 60.0
#: Requests per second assumed for a model not requested yet (see _unseen_window).
_UNSEEN_RATE_PER_S = 1.0 / 3600.0
#: Windows are recomputed once new idle times have moved the hazard by about this share
#: (``ModelForecast.evidence``: a gap where the idle-time distribution is sparse is more news
#: than one in its well-sampled body).
_RELEARN_NEWS = 0.1


#: (what an explanation's figures were read from: requests seen, the follow window, the time),
#: (requests a day, cold starts a day if lazy).
_Figures = tuple[tuple[int, float, float], tuple[float, float]]


@dataclass
class _ModelState:
    forecast: ModelForecast
    #: Windows from the idle-time distribution, relative to ``anchor`` (the last request).
    hazard: list[Window] = field(default_factory=list)
    #: ``hazard`` plus the periodic windows, in absolute time: what the model is held for.
    windows: list[Window] = field(default_factory=list)
    anchor: float | None = None
    computed_at: float = -math.inf
    computed_evidence: float = 0.0
    computed_horizon: float | None = None
    timer: float = math.inf
    load_started: float = -math.inf
    first_seen: float | None = None  # when a model not requested yet was first looked at
    # The window holding the model in [current_from, current_until), cached between changes.
    current: Window | None = None
    current_from: float = math.inf
    current_until: float = -math.inf
    #: What the last look depended on besides the time, when that is all (see _unchanged):
    #: (profile, residency, requests observed, budget binding); None: look again in full.
    seen: tuple[ModelProfile, Residency, int, bool] | None = None
    #: When the last look said to look next (before the floor of ``now + 1 ms``).
    look: float = -math.inf
    #: The earliest end among ``windows`` (they all end after the last look).
    windows_end: float = math.inf
    #: Where in each ``_FIGURES_S`` period the model's figures are read (seconds).
    figures_offset: float = 0.0
    #: The figures last read, with what they were read from (see _figures).
    figures: _Figures | None = None
    #: A decision made without a window, and what it was made from (the figures' read, the
    #: residency, the profile): kept while they are the same.
    idle_decision: tuple[tuple[_Figures, Residency, ModelProfile], ModelDecision] | None = None


class ForecastPlanner:
    """The ``ours`` policy. See the module docstring."""

    name = "ours"

    def __init__(self, models: Mapping[str, ModelProfile],
                 gbs_per_cold_start: float = DEFAULT_GBS_PER_COLD_START, *,
                 epoch_offset_s: float = 0.0) -> None:
        if not gbs_per_cold_start > 0:
            raise ValueError("gbs_per_cold_start must be positive")
        self.gbs_per_cold_start = gbs_per_cold_start
        self._models: Mapping[str, ModelProfile] = models
        self._epoch_offset = epoch_offset_s
        self._states: dict[str, _ModelState] = {}
        self._timers = TimerHeap()
        # Insertion-ordered dicts as sets: runs stay deterministic.
        self._urgent: dict[str, None] = {}
        #: Where the spread scan goes on (an index into the models, in their order) and when
        #: it last went on; -inf: the next pass looks at every model (the first one does).
        self._scan_at = 0
        self._scanned = -math.inf
        self._keeper = BudgetKeeper(self)
        self._packing = self._keeper.packing
        self._next_pack = -math.inf
        self._pack_due = True
        #: Models with windows, as a set: the budget's packing skips the others quickly.
        self.windowed: set[str] = set()
        #: Skip looks that cannot change anything (_unchanged); False: the plain path, which
        #: gives the same plans (tests/unit/policy/test_planning_scale.py compares them).
        self.shortcuts = True

    # -- Policy protocol -------------------------------------------------------------------

    def observe(self, model: str, t: float) -> None:
        st = self._state(model)
        st.forecast.observe(t)
        current = self._current(st, t)
        if current is None:
            # Cold, so the driver loads it now: decide about keeping it once it is ready.
            profile = self._models.get(model)
            ready = t + (profile.load_s if profile is not None else 0.0)
            self._set_timer(model, st, min(st.timer, ready + 1e-3))
        elif current.kind == "unseen" or (
                current.kind == "fire" and not any(w.kind == "cycle" for w in st.windows)):
            # A first request replaces the prior with data; or the fire it was held for has
            # come: let go soon rather than at the window's end (unless it is held between
            # fires anyway).
            self._urgent[model] = None
        # Otherwise it is held after use; the window moves along when its timer fires.

    def on_demand(self, model: str, view: ClusterView) -> list[Action]:
        profile = view.models.get(model)
        if profile is None:
            return []
        over = view.resident_mb() + profile.memory_mb - view.budget_mb
        if over <= 1e-9:
            return []
        self._pack_due = True
        return self._keeper.room_for_demand(model, view)

    def plan(self, view: ClusterView) -> list[Action]:
        now = view.now
        self._models = view.models
        touched: dict[str, None] = {}
        for timer in self._timers.pop_due(now):
            touched[timer.model] = None
        touched.update(self._urgent)
        self._urgent.clear()
        touched.update(self._scan_share(view))
        for name in touched:
            self._refresh(name, view)
        if self._pack_due or now >= self._next_pack:
            was_binding = self._packing.binding
            self._next_pack = now + _PACK_S
            self._pack_due = False
            self._keeper.pack(view)
            touched.update(self._keeper.retry)
            self._keeper.retry.clear()
            if self._packing.binding and not was_binding:
                # Timers were set for "held or not" only; now every change of value counts.
                for name in view.models:
                    self._refresh(name, view)
                    touched[name] = None
        return self._keeper.reconcile(touched, view)

    def _scan_share(self, view: ClusterView) -> dict[str, None]:
        """The models the spread scan looks at in this pass: the share of them that the time
        since its last turn is of ``_SCAN_S``, from where it stopped (so each model is looked
        at within ``_SCAN_S`` of the last time, as long as passes come)."""
        now, models = view.now, view.models
        n = len(models)
        share = 1.0 if not math.isfinite(self._scanned) else (now - self._scanned) / _SCAN_S
        count = n if share >= 1.0 else math.ceil(n * max(share, 0.0))
        self._scanned = now
        if count <= 0 or n == 0:
            return {}
        if count >= n:
            self._scan_at = 0
            return dict.fromkeys(models)
        start = self._scan_at % n
        names = list(models)  # a view's models are a dict: insertion order is stable
        chosen = names[start:start + count]
        if len(chosen) < count:
            chosen += names[:count - len(chosen)]
        self._scan_at = (start + count) % n
        return dict.fromkeys(chosen)

    def next_wakeup(self, now: float) -> float | None:
        if self._urgent:
            return now
        return self._timers.next_live(lambda timer: self._states[timer.model].timer == timer.t)

    # -- explanation -----------------------------------------------------------------------

    def explain(self, view: ClusterView) -> list[ModelDecision]:
        """Per model: expected demand, what laziness would cost, what the plan does and why
        (:mod:`controlplane.policy.explain`)."""
        now = view.now
        # Models without windows have no current one: only those with windows are looked at.
        states, windowed, packing = self._states, self.windowed, self._packing
        displaced, residency = self._keeper.displaced, view.residency
        standing: dict[str, tuple[Window, float, bool]] = {}
        cheapest: float | None = None
        binding = packing.binding
        for name in view.models:
            st = states.get(name)
            if st is None:
                st = self._state(name)
            if self.shortcuts and name not in windowed:
                continue
            current = self._current(st, now)
            if current is None:
                continue
            resident = residency.get(name, Residency.COLD) is not Residency.COLD
            left_out = packing.excludes(name, current.density, resident or name in displaced)
            value = packing.effective(name, current.density)
            standing[name] = (current, value, left_out)
            if resident and not left_out and binding:
                cheapest = value if cheapest is None else min(cheapest, value)
        out: list[ModelDecision] = []
        append = out.append
        gbs = self.gbs_per_cold_start
        no_window = Standing(None, cheapest, False, False)
        cold = Residency.COLD
        figures = _figures
        for name, profile in view.models.items():
            st = states[name]
            state = residency.get(name, cold)
            found = standing.get(name)
            if found is not None:
                # A window holds it now: what comes after it does not enter the decision.
                window, worth, excluded = found
                append(describe(profile, figures(st, now)[1], st.forecast.last_t is not None,
                                state, window, None,
                                Standing(worth, cheapest, excluded, name in displaced),
                                now, gbs))
                continue
            windows = st.windows
            upcoming = min((w for w in windows if w.load_at > now),
                           key=_load_at, default=None) if windows else None
            if upcoming is None:
                # Pinned, to unload, or left cold: nothing but the residency, the profile
                # and the figures enter the decision, so it is kept while they are the same.
                read = figures(st, now)
                key = (read, state, profile)
                kept = st.idle_decision
                if kept is not None and kept[0] == key:
                    append(kept[1])
                    continue
                decision = describe(profile, read[1], st.forecast.last_t is not None, state,
                                    None, None, no_window, now, gbs)
                st.idle_decision = (key, decision)
                append(decision)
                continue
            position = no_window if name not in displaced else Standing(
                None, cheapest, False, True)
            append(describe(profile, figures(st, now)[1], st.forecast.last_t is not None,
                            state, None, upcoming, position, now, gbs))
        return out

    # -- what the budget keeper reads (keeper.Windows) --------------------------------------

    def current(self, name: str, now: float) -> Window | None:
        st = self._states.get(name)
        return None if st is None else self._current(st, now)

    def forecast(self, name: str) -> ModelForecast | None:
        st = self._states.get(name)
        return None if st is None else st.forecast

    def loading(self, name: str, now: float) -> None:
        self._state(name).load_started = now

    # -- internals -------------------------------------------------------------------------

    def _state(self, model: str) -> _ModelState:
        st = self._states.get(model)
        if st is None:
            profile = self._models.get(model)
            st = _ModelState(ModelForecast(
                follow_window_s=profile.load_s if profile is not None else 10.0,
                epoch_offset_s=self._epoch_offset),
                figures_offset=float(zlib.crc32(model.encode()) % int(_FIGURES_S)))
            self._states[model] = st
        return st

    @staticmethod
    def _current(st: _ModelState, now: float) -> Window | None:
        """The window holding the model at ``now``; where windows overlap (a hold after use,
        and the fire of a periodic model), the one worth most per GB."""
        if st.current_from <= now < st.current_until:
            return st.current
        current = None
        until = math.inf
        for w in st.windows:
            if w.load_at <= now < w.end:
                if current is None or w.density > current.density:
                    current = w
                until = min(until, w.end)
            elif w.load_at > now:
                until = min(until, w.load_at)
        st.current, st.current_from, st.current_until = current, now, until
        return current

    def _set_timer(self, name: str, st: _ModelState, t: float) -> None:
        if t == st.timer or not math.isfinite(t):
            st.timer = t
            return
        st.timer = t
        self._timers.push(t, name)

    def _refresh(self, name: str, view: ClusterView) -> None:
        """Bring the model's windows up to date and set its next timer."""
        profile = view.models.get(name)
        if profile is None or profile.pinned:
            return
        now = view.now
        st = self._state(name)
        fc = st.forecast
        state = view.state(name)
        binding = self._packing.binding
        if self.shortcuts and _unchanged(st, profile, state, fc.count, binding, now):
            return
        fc.follow_window_s = profile.load_s
        resident = state is not Residency.COLD
        last = fc.last_t
        periodic = periodic_window(profile, fc, now, self.gbs_per_cold_start, resident=resident)
        horizon = None if periodic is None else 0.5 * periodic.period_s
        active = resident or bool(st.windows)
        stale = now - st.computed_at >= (_RECOMPUTE_ACTIVE_S if active else _RECOMPUTE_IDLE_S)
        learned = fc.evidence - st.computed_evidence >= _RELEARN_NEWS
        # Computed for another horizon (the model became or stopped being periodic): redo.
        reshaped = (horizon is None) != (st.computed_horizon is None) or (
            horizon is not None and st.computed_horizon is not None
            and abs(horizon - st.computed_horizon) > 0.1 * st.computed_horizon)
        if last is not None and (st.anchor is None or stale or learned or reshaped):
            st.hazard = hazard_windows(profile, fc, self.gbs_per_cold_start, horizon_s=horizon)
            st.anchor, st.computed_at = last, now
            st.computed_evidence, st.computed_horizon = fc.evidence, horizon
        elif last is not None and st.anchor is not None and last != st.anchor:
            st.hazard = [w.rebased(st.anchor, last) for w in st.hazard]
            st.anchor = last
        if last is None:
            st.windows = self._unseen_window(profile, st, now)
        else:
            st.windows = [w for w in combine(profile, fc, st.hazard, periodic,
                                             self.gbs_per_cold_start) if w.end > now]
        st.current_until = -math.inf  # windows changed: recompute the current one on demand
        if st.windows:
            self.windowed.add(name)
        else:
            self.windowed.discard(name)
        next_look = _next_look(st.windows, now, every_change=binding)
        if last is not None:
            next_look = min(next_look, st.computed_at
                            + (_RECOMPUTE_ACTIVE_S if resident or st.windows
                               else _RECOMPUTE_IDLE_S))
        if state is Residency.LOADING:
            ready = max(st.load_started, last if last is not None else -math.inf) + profile.load_s
            next_look = min(next_look, max(ready, now) + 1e-3)
        # Without a schedule (periodic windows move with the time of the look) and outside a
        # load, the next look gives the same windows and timer until something it reads
        # changes, a window ends, or the timer is due.
        if (periodic is None and fc.periodicity() is None and last is not None
                and state is not Residency.LOADING):
            st.seen = (profile, state, fc.count, binding)
            st.look = next_look
            st.windows_end = min((w.end for w in st.windows), default=math.inf)
        else:
            st.seen = None
        self._set_timer(name, st, max(next_look, now + 1e-3))

    def _unseen_window(self, profile: ModelProfile, st: _ModelState,
                       now: float) -> list[Window]:
        """A model not requested yet: assume about one request an hour, a belief that fades
        as the silence goes on (the mean of a Gamma prior on its rate, updated by the silence:
        ``r / (1 + r * s)`` after ``s`` seconds), and hold it while that is worth its memory,
        into free memory only. A live driver replays recent history first, so this matters
        mostly for a fresh start."""
        if st.first_seen is None:
            st.first_seen = now
        rate = _UNSEEN_RATE_PER_S / (1.0 + _UNSEEN_RATE_PER_S * (now - st.first_seen))
        gb = profile.memory_gb
        # The rate falls to the price of its memory at first_seen + gbs / gb - 1 / prior rate.
        end = st.first_seen + self.gbs_per_cold_start / gb - 1.0 / _UNSEEN_RATE_PER_S
        if end <= now:
            return []
        held = end - now
        return [Window(now, now, end, rate * held, gb * held, "unseen",
                       f"not requested yet; about {rate * 3600:.2f} requests/hour assumed")]

def _load_at(window: Window) -> float:
    return window.load_at


def _figures(st: _ModelState, now: float) -> _Figures:
    """The model's requests a day and cold starts a day if lazy, as of the last time at its
    place in the ``_FIGURES_S`` period (read again after a request; see ``_FIGURES_S``)."""
    fc = st.forecast
    kept = st.figures
    if kept is not None:
        count, follow, at = kept[0]
        # the common case, first and cheap: nothing changed within the period
        if (count == fc.count and follow == fc.follow_window_s
                and at <= now < at + _FIGURES_S):
            return kept
    offset = st.figures_offset
    at = math.floor((now - offset) / _FIGURES_S) * _FIGURES_S + offset
    found = st.figures = ((fc.count, fc.follow_window_s, at), fc.daily(at))
    return found


def _unchanged(st: _ModelState, profile: ModelProfile, state: Residency, count: int,
               binding: bool, now: float) -> bool:
    """Whether a look at ``now`` would leave the model's windows and timer as they are.

    It would when everything it reads but the time is as at the last look (the profile, the
    residency, the forecast -- it changes only with a request --, whether the budget binds),
    the model has no schedule (periodic windows are placed from the time of the look), no
    window has ended since, and its next look is not due: the windows are then recomputed
    from the same hazard, rebased on the same request, filtered to the same list, and the
    next look (the first change of held or not, or of any window boundary when the budget
    binds) is the same, as no boundary was crossed in between."""
    seen = st.seen
    if seen is None or st.look <= now + 1e-3 or st.timer != st.look or st.windows_end <= now:
        return False
    old_profile, old_state, old_count, old_binding = seen
    return (old_state is state and old_count == count and old_binding == binding
            and (old_profile is profile or old_profile == profile))


def _next_look(windows: list[Window], now: float, *, every_change: bool) -> float:
    """When the model needs a look after ``now``: when it goes from held to not held or back;
    with ``every_change`` (the budget binds, so the value per GB of the current window decides
    whether it is held) at every window boundary."""
    if every_change:
        return min((w.load_at if w.load_at > now else w.end for w in windows), default=math.inf)
    held_until = now
    for w in sorted(windows, key=lambda w: w.load_at):
        if w.load_at > held_until:
            return w.load_at if held_until <= now else held_until
        held_until = max(held_until, w.end)
    return held_until if held_until > now else math.inf
