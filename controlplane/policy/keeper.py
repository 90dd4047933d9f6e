"""The budget side of ``ours``: which of the models worth holding stay resident when they do
not all fit, who makes room for a load, and who comes back afterwards.

* The models with a window compete for the budget by value per byte
  (:mod:`controlplane.policy.budget`); those left out are *guests*.
* A demand load evicts guests first, then the models the budget keeps in the order of their
  forecast next use (:mod:`controlplane.policy.eviction`). A guest is served and stays until
  its window ends or a load needs its room, whichever comes first: it is the first to go.
* A kept model evicted for a demand load is *displaced*: it is loaded again as soon as there is
  room, pushing out guests if need be, for up to :data:`RESTORE_S`.
* A preload ahead of a predicted rise of demand (a periodic fire, a later rise of the hazard)
  may displace kept models when it saves more cold starts than they are expected to lose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Set
from typing import Protocol

from controlplane.policy.budget import (
    SWAP_MARGIN,
    BudgetPacking,
    PackCandidate,
    guest_occupancy,
)
from controlplane.policy.eviction import Candidate, Eviction, choose
from controlplane.policy.forecast import ModelForecast
from controlplane.policy.types import Action, ClusterView, ModelProfile, Residency
from controlplane.policy.windows import Window, load_margin_s

#: A model evicted to make room while the budget still wanted it is loaded again when room
#: appears (its evictor was a guest, now gone) for this long; after that it waits for demand.
RESTORE_S = 900.0


class Windows(Protocol):
    """What the keeper reads from the planner's per-model state."""

    @property
    def windowed(self) -> Set[str]:
        """The models with windows now: the others have no current window at any time."""

    def current(self, name: str, now: float) -> Window | None:
        """The window holding ``name`` at ``now`` (None: not worth holding now)."""

    def forecast(self, name: str) -> ModelForecast | None:
        """The forecast of ``name``; None before anything was seen of it."""

    def loading(self, name: str, now: float) -> None:
        """A load of ``name`` is planned at ``now``."""


def _ready_unpinned(view: ClusterView) -> Iterator[str]:
    for name, state in view.residency.items():
        profile = view.models.get(name)
        if state is Residency.READY and profile is not None and not profile.pinned:
            yield name


class BudgetKeeper:
    """See the module docstring. ``retry`` (models that found no room) and the packing are
    read by the planner, which decides when to pack and which models to look at."""

    def __init__(self, windows: Windows) -> None:
        self._windows = windows
        self.packing = BudgetPacking()
        # Insertion-ordered dicts as sets: runs stay deterministic.
        self.retry: dict[str, None] = {}
        #: Models evicted while the packing kept them -> when: to be restored (RESTORE_S).
        self.displaced: dict[str, float] = {}

    def density(self, name: str, now: float) -> float:
        """Avoided cold starts per GB*s of the window holding the model (0 outside windows)."""
        window = self._windows.current(name, now)
        return 0.0 if window is None else window.density

    def absence_cost(self, name: str, profile: ModelProfile, now: float,
                     absent_s: float) -> float:
        """Expected cold starts if ``name`` is not resident for the next ``absent_s``: the
        chance of a request in that time, times the cold starts it brings (itself, and those
        arriving during its load)."""
        fc = self._windows.forecast(name)
        if fc is None or fc.last_t is None:
            return 0.0
        during_load = max(fc.follow_on(now), fc.requests_after_one(profile.load_s, now))
        return fc.prob_request_within(now, absent_s) * (1.0 + during_load)

    def evict(self, view: ClusterView, need_mb: float,
              absent_s: Callable[[ModelProfile], float], *, leaving: Set[str] = frozenset(),
              guests_only: bool = False) -> Eviction:
        """The READY models to unload for ``need_mb`` (:func:`eviction.choose`), each costed
        over ``absent_s(its profile)``."""
        now = view.now
        guests: list[Candidate] = []
        kept: list[str] = []
        for name in _ready_unpinned(view):
            if name in leaving:
                continue
            density = self.density(name, now)
            # No window: worth nothing now (unloaded at its next look); or no room in the budget.
            if density <= 0 or self.packing.excludes(name, density, True):
                profile = view.models[name]
                guests.append(Candidate(name, profile.memory_mb, self.absence_cost(
                    name, profile, now, absent_s(profile)), True))
            elif not guests_only:
                kept.append(name)
        if kept and sum(c.memory_mb for c in guests) < need_mb - 1e-9:
            # Guests go first, so the others are costed only when the guests are not enough.
            for name in kept:
                profile = view.models[name]
                guests.append(Candidate(name, profile.memory_mb, self.absence_cost(
                    name, profile, now, absent_s(profile)), False))
        return choose(guests, need_mb)

    def room_for_demand(self, model: str, view: ClusterView) -> list[Action]:
        """Unloads that make room for a demand load of the COLD ``model``."""
        profile = view.models.get(model)
        if profile is None:
            return []
        over = view.resident_mb() + profile.memory_mb - view.budget_mb
        if over <= 1e-9:
            return []
        now = view.now
        # The victims are back once the demand is served, if the demanded model is a guest:
        # what counts is whether they are needed before then (its load, then theirs).
        eviction = self.evict(view, over, lambda victim: profile.load_s + victim.load_s
                              + load_margin_s(victim))
        for victim in eviction.victims:
            if not victim.guest:
                self.displaced[victim.name] = now
        return [Action("unload", v.name, f"make room for a request to {model}: "
                       + ("a guest, the first to go" if v.guest else
                          f"expected {v.cost:.2f} cold starts before it is back, the fewest "
                          "per MB"))
                for v in eviction.victims]

    def pack(self, view: ClusterView) -> None:
        """Share the budget among the models with a window (:meth:`BudgetPacking.pack`)."""
        now = view.now
        if sum(p.memory_mb for p in view.models.values()) <= view.budget_mb:
            self.packing.pack(0.0, view.budget_mb, ())  # everything fits, always
            return
        fixed = 0.0
        candidates = []
        windowed = self._windows.windowed
        residency = view.residency
        for name, profile in view.models.items():
            if name not in windowed and not profile.pinned:
                # No window: only a load in progress holds memory the others cannot have.
                if residency.get(name, Residency.COLD) is Residency.LOADING:
                    fixed += profile.memory_mb
                continue
            state = view.state(name)
            window = self._windows.current(name, now)
            if profile.pinned or (window is None and state is Residency.LOADING):
                fixed += profile.memory_mb if state is not Residency.COLD else 0.0
            elif window is not None:
                # A model evicted for a guest still holds its place: it competes as held.
                held = state is not Residency.COLD or name in self.displaced
                fc = self._windows.forecast(name)
                occupancy = (0.0 if fc is None
                             else guest_occupancy(fc.rate_recent(now), profile.load_s))
                candidates.append(PackCandidate(name, profile.memory_mb, window.density, held,
                                                occupancy))
        self.packing.pack(fixed, view.budget_mb, candidates)

    def reconcile(self, touched: Mapping[str, None], view: ClusterView) -> list[Action]:
        """Unloads and loads for the ``touched`` models (and the displaced ones)."""
        now = view.now
        unloads: list[Action] = []
        wanted: list[tuple[float, str, Window | None]] = []
        windowed = self._windows.windowed
        residency = view.residency
        for name in {**touched, **dict.fromkeys(self.displaced)}:
            profile = view.models.get(name)
            if profile is None:
                continue
            state = residency.get(name, Residency.COLD)
            if (state is Residency.COLD and name not in windowed and not profile.pinned
                    and name not in self.displaced):
                continue  # cold, no window, not coming back: nothing to do
            if profile.pinned:
                if state is Residency.COLD:
                    wanted.append((math.inf, name, None))
                continue
            window = self._windows.current(name, now)
            displaced = self.displaced.get(name)
            if displaced is not None and (state is not Residency.COLD or window is None
                                          or now - displaced > RESTORE_S):
                del self.displaced[name]
                displaced = None
            if window is None:
                if state is Residency.READY:
                    unloads.append(Action("unload", name, "idle: expected demand no longer "
                                          f"worth {profile.memory_mb:.0f} MB"))
            elif self.packing.excludes(name, window.density,
                                       state is not Residency.COLD or displaced is not None):
                # A guest: if resident, it stays until its window ends or a load needs room.
                self.displaced.pop(name, None)
                if state is Residency.COLD:
                    self.retry[name] = None  # no room now; look again at the next packing
            elif state is Residency.COLD:
                wanted.append((window.density, name, window))
        if not wanted:
            return unloads
        return unloads + self._loads(wanted, {a.model for a in unloads}, view)

    def _loads(self, wanted: list[tuple[float, str, Window | None]], leaving: set[str],
               view: ClusterView) -> list[Action]:
        """Loads for ``wanted`` (densest first) that fit next to the models staying, and the
        evictions they need: guests make room for any model the budget keeps; a predicted
        rise of demand may also evict kept models, when it saves more than they are expected
        to lose (:meth:`_room_for_rise`)."""
        now = view.now
        evictions: list[Action] = []
        free = view.budget_mb - view.resident_mb() + sum(
            view.models[m].memory_mb for m in leaving)
        wanted.sort(key=lambda item: (-item[0], item[1]))
        loads: list[Action] = []
        guests: list[Candidate] | None = None
        for _, name, window in wanted:
            need = view.models[name].memory_mb
            if need > free + 1e-9:
                if window is not None and window.kind in ("fire", "ahead"):
                    eviction = self._room_for_rise(window, need - free, leaving, view)
                else:
                    if guests is None:
                        guests = list(self.evict(view, math.inf, lambda _: 0.0,
                                                 leaving=leaving, guests_only=True).victims)
                    eviction = choose([g for g in guests if g.name not in leaving],
                                      need - free)
                if not eviction.covers(need - free):
                    self.retry[name] = None  # blocked by the budget: look again later
                    continue
                for victim in eviction.victims:
                    evictions.append(Action("unload", victim.name, (
                        f"a guest; {name} is kept" if victim.guest else
                        f"evicted for {name}: expected {victim.cost:.2f} cold starts while "
                        "it is out, fewer than the preload saves")))
                    leaving.add(victim.name)
                    if not victim.guest:
                        self.displaced[victim.name] = now
                free += eviction.freed_mb
            free -= need
            reason = "pinned" if window is None else (
                f"preload: {window.why}; {window.value:.2f} cold starts avoided "
                f"for {window.cost_gbs:.0f} GB*s")
            loads.append(Action("load", name, reason))
            self._windows.loading(name, now)
            self.displaced.pop(name, None)
        return evictions + loads

    def _room_for_rise(self, window: Window, need_mb: float, leaving: set[str],
                       view: ClusterView) -> Eviction:
        """Evictions that make ``need_mb`` for a preload ahead of a predicted rise of demand:
        guests, and kept models only when the preload saves more, by :data:`SWAP_MARGIN`,
        than they are expected to lose until the window is over and they are back. Does not
        cover ``need_mb`` when the preload should wait."""
        now = view.now
        eviction = self.evict(view, need_mb, lambda victim: max(0.0, window.end - now)
                              + victim.load_s + load_margin_s(victim), leaving=leaving)
        if window.value < SWAP_MARGIN * eviction.cost:
            return Eviction((), 0.0, 0.0)
        return eviction
