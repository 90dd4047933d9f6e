"""The plan in words: for each model, why it is resident, staged (to be preloaded), or left cold
under the budget. The admin API shows these lines; ``warmctl simulate`` can print them too.

A model's *worth* is what the budget's packing ranks it by (:mod:`controlplane.policy.budget`):
expected cold starts avoided per GB*s of its current window, counting only the memory it would
not hold anyway. When the budget binds, it is quoted against the cheapest resident model the
budget keeps: "worth 3.2x the cheapest resident per MB" means that a MB of it saves 3.2 times
the cold starts a MB of the marginal resident does, so it stays; below 1x it is a guest, served
on demand and the first to go.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.policy.types import DecisionKind, ModelDecision, ModelProfile, Residency
from controlplane.policy.windows import Window


@dataclass(frozen=True, slots=True)
class Standing:
    """Where one model stands in the competition for the budget at one moment."""

    #: Effective density of its current window (avoided cold starts per GB*s); None: no window.
    worth: float | None
    #: The lowest worth among the resident models the budget keeps; None: it does not bind.
    cheapest: float | None
    #: The packing left it out: a guest if resident, loaded only on demand if not.
    left_out: bool
    #: Evicted to make room while the budget keeps it: it comes back when there is room.
    displaced: bool


def describe(profile: ModelProfile, figures: tuple[float, float], seen: bool,
             state: Residency, current: Window | None, upcoming: Window | None,
             standing: Standing, now: float, gbs_per_cold_start: float) -> ModelDecision:
    """One model's decision and why (``now`` in policy seconds; the price in GB*s per cold
    start, the policy's knob). ``figures``: its requests a day and cold starts a day if
    loaded on demand (:meth:`ModelForecast.daily`); ``seen``: it has been requested."""
    per_day, lazy = figures
    warm = profile.memory_gb * 24.0
    resident = state is not Residency.COLD
    kind: DecisionKind
    preload_at = None
    if profile.pinned:
        kind, why = "pinned", "pinned: always loaded"
    elif current is not None and standing.left_out:
        worth = _relative(standing)
        if resident:
            kind, why = "keep", (f"{current.why}; {worth}, so it is a guest: served, and the "
                                 "first to go when a load needs room")
        else:
            kind, why = "lazy", (f"{current.why}; {worth}: left cold, loaded on its next "
                                 "request and the first to go after it")
    elif current is not None:
        worth = _relative(standing) if standing.cheapest is not None else (
            f"worth {current.density * gbs_per_cold_start:.2f}x its memory")
        if resident:
            kind, why = "keep", f"{current.why}; {worth}"
        else:
            kind, preload_at = "preload", now
            why = (f"evicted to make room, back as soon as there is room; {worth}"
                   if standing.displaced else f"{current.why}; {worth}")
    elif resident:
        kind, why = "unload", "expected demand no longer worth its memory"
    elif upcoming is not None:
        kind, preload_at, why = "preload", upcoming.load_at, upcoming.why
    else:
        kind = "lazy"
        why = ("no requests seen yet" if not seen else
               f"~{lazy:.1f} cold starts/day cost less than {warm:.1f} GB*h/day of residency")
    return ModelDecision(profile.name, per_day, lazy, warm, kind, preload_at, why)


def _relative(standing: Standing) -> str:
    if standing.worth is None or not standing.cheapest:
        return "the budget is taken by models worth more per MB"
    return (f"worth {standing.worth / standing.cheapest:.2g}x the cheapest resident per MB "
            "(cold starts avoided per GB*s)")
