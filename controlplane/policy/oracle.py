"""``oracle``: knows the whole trace; the lower bound the other policies are measured against.

Between two requests it keeps a model loaded iff that is cheaper than unloading it and loading it
again just in time (the gap is at most a load time); otherwise it unloads right after the request
and starts the next load exactly ``load_s`` before the next request, so that request is warm.
When the budget binds it evicts the model whose next use is furthest away (Belady), and skips a
preload when every resident model is needed sooner. Its parameter is the fraction of the budget
it lets itself use (default 1.0).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from controlplane.policy.baselines import load_pinned
from controlplane.policy.timers import TimerHeap
from controlplane.policy.types import Action, ClusterView, ModelProfile, Residency


def just_in_time(arrival: float, load_s: float) -> float:
    """Latest load start whose ready time (start + load_s, in floats) is not after ``arrival``."""
    start = arrival - load_s
    while start + load_s > arrival:
        start = math.nextafter(start, -math.inf)
    return start


class Oracle:
    name = "oracle"

    def __init__(self, models: Mapping[str, ModelProfile], trace: Sequence[tuple[float, str]],
                 budget_fraction: float = 1.0) -> None:
        if not 0 < budget_fraction <= 1:
            raise ValueError("budget_fraction must be in (0, 1]")
        self.budget_fraction = budget_fraction
        arrivals: dict[str, list[float]] = defaultdict(list)
        for t, model in trace:
            arrivals[model].append(t)
        self._arrivals = {m: sorted(ts) for m, ts in arrivals.items()}
        self._next = {m: 0 for m in self._arrivals}  # index of the first request not yet seen
        self._timers = TimerHeap()
        for model in self._arrivals:
            self._schedule_preload(model, models)

    def _next_use(self, model: str) -> float:
        times = self._arrivals.get(model)
        i = self._next.get(model, 0)
        return times[i] if times is not None and i < len(times) else math.inf

    def _schedule_preload(self, model: str, models: Mapping[str, ModelProfile]) -> None:
        profile = models.get(model)
        nxt = self._next_use(model)
        if profile is not None and math.isfinite(nxt):
            self._timers.push(max(0.0, just_in_time(nxt, profile.load_s)), model, "load",
                              self._next[model])

    def observe(self, model: str, t: float) -> None:
        times = self._arrivals.get(model)
        if times is None:
            return
        i = self._next[model]
        while i < len(times) and times[i] <= t:
            i += 1
        self._next[model] = i
        self._timers.push(t, model, "check", i)

    def _needed_soon(self, model: str, now: float, load_s: float) -> bool:
        # Staying until the next request costs (next - now); leaving and coming back costs load_s.
        return self._next_use(model) - now <= load_s

    def _evict(self, model: str, view: ClusterView, used_mb: float, need_mb: float,
               before: float, gone: set[str], reason: str) -> list[Action] | None:
        """Belady: unload the models used furthest in the future (only those used after
        ``before``) until ``need_mb`` fits next to ``used_mb``; None if it cannot."""
        over = used_mb + need_mb - view.budget_mb * self.budget_fraction
        if over <= 1e-9:
            return []
        candidates = sorted(
            ((self._next_use(name), name) for name, s in view.residency.items()
             if s is Residency.READY and name != model and name not in gone
             and name in view.models and not view.models[name].pinned),
            reverse=True)
        actions = []
        for next_use, name in candidates:
            if over <= 1e-9 or next_use <= before:
                break
            actions.append(Action("unload", name, reason))
            over -= view.models[name].memory_mb
        return actions if over <= 1e-9 else None

    def on_demand(self, model: str, view: ClusterView) -> list[Action]:
        profile = view.models.get(model)
        need = profile.memory_mb if profile is not None else 0.0
        actions = self._evict(model, view, view.resident_mb(), need, -math.inf, set(),
                              f"next used furthest away (room for {model})")
        return actions or []

    def plan(self, view: ClusterView) -> list[Action]:
        now = view.now
        unloads: list[Action] = []
        loads = load_pinned(view)
        gone: set[str] = set()
        used_mb: float | None = None
        for _, _, name, kind, index in self._timers.pop_due(now):
            profile = view.models.get(name)
            if profile is None or profile.pinned or index != self._next.get(name):
                continue
            state = view.state(name)
            if kind == "check":
                if state is Residency.LOADING:
                    self._timers.push(now + min(0.25, profile.load_s), name, "check", index)
                    continue
                if state is Residency.READY and not self._needed_soon(name, now,
                                                                       profile.load_s):
                    unloads.append(Action("unload", name, "next request is further away "
                                                          "than a reload"))
                    gone.add(name)
                    if used_mb is not None:
                        used_mb -= profile.memory_mb
                self._schedule_preload(name, view.models)
            elif state is Residency.COLD:
                if used_mb is None:
                    used_mb = view.resident_mb() - sum(view.models[m].memory_mb for m in gone)
                evictions = self._evict(name, view, used_mb, profile.memory_mb,
                                        self._next_use(name), gone,
                                        f"next used after {name}'s next request")
                if evictions is None:
                    continue  # everything resident is needed sooner: let this one be cold
                for action in evictions:
                    gone.add(action.model)
                    used_mb -= view.models[action.model].memory_mb
                unloads.extend(evictions)
                loads.append(Action("load", name, "just in time for the next request"))
                used_mb += profile.memory_mb
        return unloads + loads

    def next_wakeup(self, now: float) -> float | None:
        return self._timers.next_live(lambda timer: timer.token == self._next.get(timer.model))

