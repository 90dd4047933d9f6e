"""The rules the running system imposes around a policy, shared by the live driver and the
simulators, so simulated figures describe what runs live.

A policy proposes; the harness decides what of it is applied:

* Only demanded models are loaded by a plan: a model without a recorded request waits for its
  first one (a forecaster's prior for unseen models would otherwise fill every free megabyte).
* Pinned models are left alone until the pins are settled (live: loaded one by one at start-up;
  a simulation loads them at time 0, so they are settled from the start).
* Held models (pins, operator rules) that are cold are loaded; held models are never unloaded.
* Models the lifecycle blocks (disabled, held cold by the operator, a failed load backing off)
  are not loaded automatically; the simulator has no such models.
* On demand, evictions beyond the policy's when they do not make room (:meth:`Harness.more_room`).
* Explanations: a preload of a never-requested model reads "lazy", and a block outranks the
  policy's wish.

Pure and synchronous: callers pass time and state in; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from controlplane.policy.types import Action, ClusterView, DecisionKind, ModelDecision, Residency

#: (decision, why) when the lifecycle forbids automatic loads of a model; None: allowed
Blocked = Callable[[str], tuple[DecisionKind, str] | None]

NEVER_REQUESTED = ("never requested: loaded on its first request; preloads start once it has "
                   "recorded usage")
HELD_LOAD = "held by a pin or an operator rule"


def _never_blocked(model: str) -> tuple[DecisionKind, str] | None:
    return None


@dataclass
class Harness:
    """The live rules around a policy. ``held`` and ``demanded`` are shared, mutable sets
    (the live driver's operator rules add to ``held`` directly)."""

    pinned: frozenset[str]
    held: set[str] = field(default_factory=set)
    demanded: set[str] = field(default_factory=set)
    pins_settled: bool = True
    blocked: Blocked = _never_blocked

    def observe(self, model: str) -> None:
        """``model`` has a recorded request: plans may load it from now on."""
        self.demanded.add(model)

    def admit(self, actions: Sequence[Action], view: ClusterView) -> list[Action]:
        """What of a plan is applied: its unloads (the caller refuses, and records, those of
        held models), its loads of demanded models the lifecycle allows, then the loads of
        cold held models."""
        admitted = [a for a in actions if a.kind == "unload"
                    or (a.model in self.demanded and self.blocked(a.model) is None)]
        if not self.pins_settled:
            admitted = [a for a in admitted if a.model not in self.pinned]
        return admitted + self.held_loads(view)

    def held_loads(self, view: ClusterView) -> list[Action]:
        """Pinned and rule-held models that are cold (a rule just began, a load failed)."""
        return [Action("load", name, HELD_LOAD) for name in sorted(self.held)
                if name in view.models and view.state(name) is Residency.COLD
                and self.blocked(name) is None
                and (self.pins_settled or name not in self.pinned)]

    def more_room(self, model: str, view: ClusterView, planned: Sequence[Action],
                  ready_since: Mapping[str, float]) -> tuple[list[Action], float]:
        """Evictions beyond the policy's ``planned`` ones when those do not make room for
        ``model`` (which ``view`` shows cold): a load must not push the budget over while an
        idle model could go, least recently ready first (``ready_since``: model -> when it
        became ready, any monotonic unit). ``ours`` already evicts what it must; baselines
        such as keep-alive make no room on demand, and this keeps them within budget.

        Returns the extra unloads and the MB still over budget after them (memory held by
        loading or held models), 0 when it fits."""
        profiles = view.models
        going = {a.model for a in planned if a.kind == "unload"}
        need = view.resident_mb() + profiles[model].memory_mb - view.budget_mb - sum(
            profiles[m].memory_mb for m in going if view.state(m) is Residency.READY)
        extra = []
        idle = sorted((ready_since[name], name) for name, state in view.residency.items()
                      if state is Residency.READY and name not in going and name != model
                      and name not in self.held and name in ready_since)
        for _, name in idle:
            if need <= 0:
                break
            extra.append(Action("unload", name, f"make room for {model} (budget)"))
            need -= profiles[name].memory_mb
        return extra, max(0.0, need)

    def explain(self, decisions: Sequence[ModelDecision],
                notes: Mapping[str, str] | None = None) -> list[ModelDecision]:
        """The policy's explanation as applied: never-requested preloads read ``lazy``, blocks
        outrank the policy's wish, and ``notes`` (model -> text, e.g. a move off the GPU) are
        appended to the why of models not blocked."""
        result = []
        for d in decisions:
            if d.decision == "preload" and d.model not in self.demanded:
                # built, not replace()d: thousands of these in a pass at 10,000 models
                d = ModelDecision(d.model, d.requests_per_day, d.cold_starts_per_day_if_lazy,
                                  d.warm_cost_gbh_per_day, "lazy", None, NEVER_REQUESTED)
            blocked = self.blocked(d.model)
            if blocked is not None and d.decision in ("pinned", "keep", "preload", "lazy"):
                d = replace(d, decision=blocked[0], preload_at=None, why=blocked[1])
            elif notes and (note := notes.get(d.model)):
                d = replace(d, why=f"{d.why}; {note}" if d.why else note)
            result.append(d)
        return result


def seeded(pinned: Collection[str], demanded: Collection[str] = ()) -> Harness:
    """A simulation's harness: pins settled and held from the start, ``demanded`` seeded (an
    oracle knows every model of the trace in advance)."""
    return Harness(pinned=frozenset(pinned), held=set(pinned), demanded=set(demanded))
