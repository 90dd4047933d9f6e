"""Reference policies to compare ``ours`` against. Each sees only the past.

* ``always_on``: load what fits at the start, never unload except for a demand load (LRU).
* ``keepalive``: load on demand, unload a fixed time after the last request (AWS Lambda style).
* ``lru``: load on demand, unload only to make room, least recently used first (ModelMesh,
  SageMaker multi-model endpoints); its parameter scales the budget it allows itself.

The hybrid histogram policy of Shahrad et al. is in :mod:`controlplane.policy.hybrid`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

from controlplane.policy.types import Action, ClusterView, ModelProfile, Residency


class LastUse:
    """Last request time per model, and LRU eviction on top of it."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def observe(self, model: str, t: float) -> None:
        if t > self.last.get(model, -math.inf):
            self.last[model] = t

    def evict_for(self, model: str, view: ClusterView, budget_mb: float,
                  reason: str = "least recently used") -> list[Action]:
        """Unloads (LRU first) that make room for ``model`` within ``budget_mb``."""
        profile = view.models.get(model)
        need = profile.memory_mb if profile is not None else 0.0
        over = view.resident_mb() + need - budget_mb
        if over <= 1e-9:
            return []
        candidates = sorted(
            (self.last.get(name, -math.inf), name)
            for name, state in view.residency.items()
            if state is Residency.READY and name != model and name in view.models
            and not view.models[name].pinned)
        actions = []
        for _, name in candidates:
            if over <= 1e-9:
                break
            actions.append(Action("unload", name, f"{reason}: make room for {model}"))
            over -= view.models[name].memory_mb
        return actions


def load_pinned(view: ClusterView) -> list[Action]:
    return [Action("load", name, "pinned") for name, p in view.models.items()
            if p.pinned and view.state(name) is Residency.COLD]


class AlwaysOn:
    """Keep everything loaded as far as the budget allows."""

    name = "always_on"

    def __init__(self, models: Mapping[str, ModelProfile]) -> None:
        self._use = LastUse()

    def observe(self, model: str, t: float) -> None:
        self._use.observe(model, t)

    def on_demand(self, model: str, view: ClusterView) -> list[Action]:
        return self._use.evict_for(model, view, view.budget_mb)

    def plan(self, view: ClusterView) -> list[Action]:
        actions = load_pinned(view)
        free = view.budget_mb - view.resident_mb() - sum(
            view.models[a.model].memory_mb for a in actions)
        # Whatever is cold and fits goes in, in the order the models were declared.
        for name, profile in view.models.items():
            if view.state(name) is Residency.COLD and not profile.pinned \
                    and profile.memory_mb <= free + 1e-9:
                actions.append(Action("load", name, "always on: fits in the budget"))
                free -= profile.memory_mb
        return actions

    def next_wakeup(self, now: float) -> float | None:
        return None


class KeepAlive:
    """Load on demand; unload ``keepalive_s`` after the model's last request."""

    name = "keepalive_10m"

    def __init__(self, models: Mapping[str, ModelProfile], keepalive_s: float = 600.0) -> None:
        if keepalive_s < 0:
            raise ValueError("keepalive_s must not be negative")
        self.keepalive_s = keepalive_s
        self._use = LastUse()
        self._due: dict[str, float] = {}
        # Superseded entries stay in the heap and are skipped when they reach the top.
        self._expiry: list[tuple[float, str]] = []

    def _schedule(self, model: str, t: float) -> None:
        self._due[model] = t
        heapq.heappush(self._expiry, (t, model))

    def observe(self, model: str, t: float) -> None:
        before = self._use.last.get(model)
        self._use.observe(model, t)
        if before is None or self._use.last[model] > before:
            self._schedule(model, self._use.last[model] + self.keepalive_s)

    def on_demand(self, model: str, view: ClusterView) -> list[Action]:
        return self._use.evict_for(model, view, view.budget_mb)

    def plan(self, view: ClusterView) -> list[Action]:
        actions = load_pinned(view)
        still_loading = []
        while self._expiry and self._expiry[0][0] <= view.now:
            expiry, name = heapq.heappop(self._expiry)
            if self._due.get(name) != expiry:
                continue
            del self._due[name]
            profile = view.models.get(name)
            if profile is None or profile.pinned:
                continue
            state = view.state(name)
            if state is Residency.READY:
                actions.append(Action("unload", name,
                                      f"idle for {self.keepalive_s:.0f}s (keep-alive)"))
            elif state is Residency.LOADING:
                still_loading.append(name)
        for name in still_loading:  # a load longer than the keep-alive: drop it once ready
            self._schedule(name, view.now + 1.0)
        return actions

    def next_wakeup(self, now: float) -> float | None:
        while self._expiry:
            expiry, name = self._expiry[0]
            if self._due.get(name) == expiry:
                return expiry
            heapq.heappop(self._expiry)
        return None


class Lru:
    """Load on demand; unload only to make room, least recently used first.

    ``budget_fraction`` (default 1.0) is the share of the budget it lets itself fill, which
    turns the classic cache into a curve of memory against cold starts.
    """

    name = "lru"

    def __init__(self, models: Mapping[str, ModelProfile], budget_fraction: float = 1.0) -> None:
        if not 0 < budget_fraction <= 1:
            raise ValueError("budget_fraction must be in (0, 1]")
        self.budget_fraction = budget_fraction
        self._use = LastUse()

    def observe(self, model: str, t: float) -> None:
        self._use.observe(model, t)

    def on_demand(self, model: str, view: ClusterView) -> list[Action]:
        return self._use.evict_for(model, view, view.budget_mb * self.budget_fraction)

    def plan(self, view: ClusterView) -> list[Action]:
        return load_pinned(view)

    def next_wakeup(self, now: float) -> float | None:
        return None
