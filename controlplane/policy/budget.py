"""Sharing the memory budget among models that are all worth holding.

Each model's windows say when it is worth its memory at the configured price. When the budget
cannot hold all of them, they compete by value per byte (expected cold starts avoided per GB*s
of the window they are in, per GB*s of the memory keeping them actually costs): the budget is
filled greedily from the best, and the ones left out are guests, the first to go and not
preloaded (:mod:`controlplane.policy.keeper`). This matters most for cold requests: the model a
cold request brings in must not push out a model worth more than itself, which is what happens
when memory is full of models that are merely "nice to have".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

#: A held model counts this much more when competing (also the margin a preload needs to evict
#: a held model): moving memory between models of about equal value is churn, not gain.
SWAP_MARGIN = 1.25


@dataclass(frozen=True)
class PackCandidate:
    """A model with a window, competing for the budget."""

    name: str
    memory_mb: float
    #: Avoided cold starts per GB*s of its current window.
    density: float
    #: Resident now (or displaced by a guest): counts :data:`SWAP_MARGIN` more.
    held: bool
    #: Share of the time it would be resident anyway if left out: loaded for each request
    #: that finds it cold, until the load is done (see :func:`guest_occupancy`).
    occupancy: float = 0.0


def guest_occupancy(rate_per_s: float, load_s: float) -> float:
    """Share of the time a model left out of the budget is resident anyway: each request that
    finds it cold loads it for ``load_s``, and requests during the load join that one, so at
    ``r`` requests/s it is loading ``r * load_s / (1 + r * load_s)`` of the time (Poisson
    arrivals)."""
    x = max(0.0, rate_per_s) * load_s
    return x / (1.0 + x)


#: Occupancy is capped here: a model always resident anyway still saves a little memory.
_MAX_OCCUPANCY = 0.95


@dataclass
class BudgetPacking:
    """The outcome of the last packing, and the questions asked of it until the next one."""

    #: Models with a window that did not fit, by name.
    left_out: set[str] = field(default_factory=set)
    #: Effective density each competing model had when packed.
    packed_density: dict[str, float] = field(default_factory=dict)
    #: Effective density of the best model left out (0 when everything fits): what a GB*s of
    #: memory is worth at the margin, the bar for models whose window changed since packing.
    shadow_price: float = 0.0
    #: Per model packed: factor from density to effective density, ``1 / (1 - occupancy)``.
    _factor: dict[str, float] = field(default_factory=dict)

    def pack(self, fixed_mb: float, budget_mb: float,
             candidates: Iterable[PackCandidate]) -> None:
        """Fill ``budget_mb`` (minus ``fixed_mb`` held by pinned or loading models) with
        ``candidates``, best effective density first.

        Leaving a model out saves only the memory it would not hold anyway: a busy model left
        out is loaded again at its next request and holds its memory through the load. So the
        memory the models left out hold on average (their :attr:`PackCandidate.occupancy`)
        is set aside first, as room for their demand loads; keeping a model then costs the
        rest of its memory, ``memory * (1 - occupancy)``, and it competes by what it saves per
        GB*s of that: ``density / (1 - occupancy)``."""
        ranked = []
        self._factor = {}
        used = fixed_mb
        for c in candidates:
            occupancy = min(_MAX_OCCUPANCY, max(0.0, c.occupancy))
            factor = 1.0 / (1.0 - occupancy)
            self._factor[c.name] = factor
            effective = c.density * factor * (SWAP_MARGIN if c.held else 1.0)
            ranked.append((-effective, c.name, c.memory_mb, occupancy))
            used += c.memory_mb * occupancy
        ranked.sort()
        self.left_out = set()
        self.packed_density = {}
        self.shadow_price = 0.0
        for negative, name, memory, occupancy in ranked:
            self.packed_density[name] = -negative
            extra = memory * (1.0 - occupancy)
            if used + extra <= budget_mb + 1e-9:
                used += extra
            else:
                self.left_out.add(name)
                self.shadow_price = max(self.shadow_price, -negative)

    def effective(self, name: str, density: float) -> float:
        """``density`` as ``name`` competes with it: per GB*s of the memory it would not
        hold anyway (no bonus for being held)."""
        return density * self._factor.get(name, 1.0)

    def excludes(self, name: str, density: float, held: bool) -> bool:
        """Whether the budget has no room for ``name`` at ``density`` right now."""
        effective = self.effective(name, density) * (SWAP_MARGIN if held else 1.0)
        packed = self.packed_density.get(name)
        if packed is not None and effective <= packed * (1 + 1e-9):
            return name in self.left_out
        # Its window changed since the packing (a fire is coming): it must beat the margin.
        return effective < self.shadow_price

    @property
    def binding(self) -> bool:
        return self.shadow_price > 0 and math.isfinite(self.shadow_price)
