"""Sharing the memory budget among models that are all worth holding.

Each model's windows say when it is worth its memory at the configured price. When the budget
cannot hold all of them, they compete by value density (expected cold starts avoided per GB*s of
the window they are in): the budget is filled greedily from the densest, and the ones left out
are dropped after use and not preloaded. This matters most for cold requests: the model a cold
request brings in must not push out a model worth more than itself, which is what happens when
memory is full of models that are merely "nice to have".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

#: A held model counts this much more when competing (also the margin a preload needs to evict
#: a held model): moving memory between models of about equal value is churn, not gain.
SWAP_MARGIN = 1.25


@dataclass
class BudgetPacking:
    """The outcome of the last packing, and the questions asked of it until the next one."""

    #: Models with a window that did not fit, by name.
    left_out: set[str] = field(default_factory=set)
    #: Density each competing model had when packed.
    packed_density: dict[str, float] = field(default_factory=dict)
    #: Value density of the best model left out (0 when everything fits): what a GB*s of memory
    #: is worth at the margin, the bar for models whose window changed since the packing.
    shadow_price: float = 0.0

    def pack(self, fixed_mb: float, budget_mb: float,
             candidates: Iterable[tuple[str, float, float, bool]]) -> None:
        """Fill ``budget_mb`` (minus ``fixed_mb`` held by pinned or loading models) with
        ``(name, memory_mb, density, held)`` candidates, densest first."""
        ranked = sorted(((-(density * SWAP_MARGIN if held else density), name, memory)
                         for name, memory, density, held in candidates))
        used = fixed_mb
        self.left_out = set()
        self.packed_density = {}
        self.shadow_price = 0.0
        for negative, name, memory in ranked:
            self.packed_density[name] = -negative
            if used + memory <= budget_mb + 1e-9:
                used += memory
            else:
                self.left_out.add(name)
                self.shadow_price = max(self.shadow_price, -negative)

    def excludes(self, name: str, density: float, held: bool) -> bool:
        """Whether the budget has no room for ``name`` at ``density`` right now."""
        effective = density * SWAP_MARGIN if held else density
        packed = self.packed_density.get(name)
        if packed is not None and effective <= packed * (1 + 1e-9):
            return name in self.left_out
        # Its window changed since the packing (a fire is coming): it must beat the margin.
        return effective < self.shadow_price

    @property
    def binding(self) -> bool:
        return self.shadow_price > 0 and math.isfinite(self.shadow_price)
