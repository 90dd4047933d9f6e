"""Which resident models make room when the budget is full: Belady's rule with forecasts.

Belady's rule evicts the item whose next use is furthest away. Here the future is a forecast
and models differ in size by a factor of a hundred, so the rule becomes: evict what costs the
fewest expected cold starts per MB freed, where the cost of evicting a model is the probability
that it is requested before it can be back, times the cold starts that request brings (itself
and those arriving while it loads, ``1 + follow_on``). A model whose next request is likely
within seconds costs about one cold start whatever its recent history; one that is used often
but not now (a cron between fires) costs almost nothing. Recency plays no part.

Models the budget's packing left out (:mod:`controlplane.policy.budget`), such as a rare model
loaded for one request, are *guests*: they go first, whatever they cost, so a demand load of a
model worth little pushes out another such model rather than one of the hot set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A READY model that may be evicted."""

    name: str
    memory_mb: float
    #: Expected cold starts its eviction costs (see the module docstring).
    cost: float
    #: Left out of the budget's packing: goes before any model the packing keeps.
    guest: bool

    @property
    def cost_per_mb(self) -> float:
        return self.cost / self.memory_mb if self.memory_mb > 0 else 0.0


@dataclass(frozen=True)
class Eviction:
    victims: tuple[Candidate, ...]
    freed_mb: float
    #: Expected cold starts of the victims that were not guests.
    cost: float

    def covers(self, need_mb: float) -> bool:
        return self.freed_mb >= need_mb - 1e-9


def choose(candidates: Iterable[Candidate], need_mb: float) -> Eviction:
    """The evictions that free ``need_mb`` at the least expected cost (as far as the
    candidates allow): guests first; then, one at a time, the model with the least cost per MB
    of what is still needed (memory freed beyond the need is worth nothing now, so a big model
    is not evicted to free a little); then whatever turned out unnecessary is kept after all.
    Ties go by name, so runs are deterministic."""
    pool = sorted(candidates, key=lambda c: (not c.guest, c.cost_per_mb, c.name))
    taken: list[Candidate] = []
    freed = 0.0
    while pool and freed < need_mb - 1e-9:
        if pool[0].guest:
            pick = pool[0]
        else:
            short = need_mb - freed
            pick = min(pool, key=lambda c: (c.cost / max(min(c.memory_mb, short), 1e-9),
                                            c.name))
        pool.remove(pick)
        taken.append(pick)
        freed += pick.memory_mb
    # A later, bigger pick can make an earlier one unnecessary: keep it after all.
    for c in sorted(taken, key=lambda c: (-c.cost, c.name)):
        if freed - c.memory_mb >= need_mb - 1e-9:
            taken.remove(c)
            freed -= c.memory_mb
    return Eviction(tuple(taken), freed, sum(c.cost for c in taken if not c.guest))
