"""Pure replica placement: how many copies of each model, and on which instances.

The residency policy decides fleet-wide *whether* a model is resident (``wanted``) and forecasts
its request rate; :func:`plan_replicas` turns that into per-instance residency under each
instance's own memory budget. It is pure and deterministic (no clock, no I/O, no randomness), so
the live fleet and the fleet simulator place replicas by the same rule.

Rules:

* not wanted -> no replica (the policy evicts it); wanted -> ``max(1, ceil(rate /
  rate_per_replica))``; pinned -> at least ``pinned_replicas``. The target is capped by
  ``max_replicas`` (0: one per instance) and the demand's own ``max_replicas`` (1 for stateful
  or decoupled models).
* Models are placed pinned first, then by forecast rate descending, ties by name.
* A model first keeps the replicas it has on accepting instances (no churn), then gets new ones
  on the accepting instance with most free budget that fits, never two on one instance. Free
  budget for a new replica also counts the memory that lower-ranked models' kept replicas will
  need, so a new replica goes where it displaces nobody when such a place exists.
* What fits nowhere gets fewer replicas; the reason is in :attr:`ReplicaPlan.unplaced`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

#: Slack for float sums of memory, so exact fits are not refused by rounding.
_EPS_MB = 1e-6


@dataclass(frozen=True)
class ReplicaOptions:
    #: Requests/s one replica carries (``fleet.replica_rate_per_s``).
    rate_per_replica: float = 5.0
    pinned_replicas: int = 2
    #: 0: at most one per instance.
    max_replicas: int = 0


@dataclass(frozen=True)
class InstanceCapacity:
    name: str
    #: MB available to models on this instance; ``math.inf`` when unlimited.
    budget_mb: float
    #: False while draining or down: it gets no replica and keeps none.
    accepting: bool = True


@dataclass(frozen=True, slots=True)
class ReplicaDemand:
    model: str
    memory_mb: float
    #: Forecast requests/s (a policy explanation's ``requests_per_day / 86400``).
    rate_per_s: float
    #: The policy keeps the model resident now (pinned, keep, preload due, held).
    wanted: bool
    pinned: bool = False
    #: 1 for stateful (sequence batching) or decoupled models; None: no own cap.
    max_replicas: int | None = None


@dataclass(frozen=True, slots=True)
class Replica:
    instance: str
    #: Human text, e.g. "hot: 12 req/s forecast, 3 replicas at 5 req/s each; kept".
    why: str


@dataclass(frozen=True)
class ReplicaPlan:
    #: model -> where it should be resident, kept replicas first; every demanded model is a key
    #: (an empty tuple: no replica), in placement order.
    replicas: Mapping[str, tuple[Replica, ...]]
    #: wanted model -> why it got fewer replicas than its target, or none.
    unplaced: Mapping[str, str]
    #: model -> replicas asked for, after the configured caps and before capacity.
    targets: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def instances_of(self, model: str) -> tuple[str, ...]:
        return tuple(r.instance for r in self.replicas.get(model, ()))

    def on(self, instance: str) -> tuple[str, ...]:
        """Models planned on ``instance``, in placement order."""
        return tuple(model for model, placed in self.replicas.items()
                     if any(r.instance == instance for r in placed))

    def target(self, model: str) -> int:
        return self.targets.get(model, 0)


def plan_replicas(demands: Sequence[ReplicaDemand], instances: Sequence[InstanceCapacity],
                  current: Mapping[str, Collection[str]],
                  options: ReplicaOptions) -> ReplicaPlan:
    """Place replicas of ``demands`` on ``instances``; ``current`` maps a model to the instances
    it is resident (or loading) on now. Raises ValueError on duplicate names or bad numbers."""
    _validate(demands, instances, options)
    accepting = [i for i in instances if i.accepting]
    order = sorted(demands, key=_placement_order)
    n_instances = len(instances)
    # Not wanted: no replica (the common case among thousands of models, so it is quick).
    targets = {d.model: _target(d, n_instances, options) if d.wanted else 0 for d in order}
    budget = {i.name: i.budget_mb for i in accepting}
    rank = {i.name: k for k, i in enumerate(instances)}
    used = dict.fromkeys(budget, 0.0)
    # Where each model is now (accepting instances only); the first ``target`` of them are
    # reserved until its turn, so new replicas avoid displacing them.
    sticky: dict[str, list[str]] = {}
    for d in order:
        where = current.get(d.model)
        if where:
            sticky[d.model] = sorted((name for name in set(where) if name in budget),
                                     key=rank.__getitem__)
    reserved = dict.fromkeys(budget, 0.0)
    for d in order:
        for name in sticky.get(d.model, ())[:targets[d.model]]:
            reserved[name] += d.memory_mb

    replicas: dict[str, tuple[Replica, ...]] = {}
    unplaced: dict[str, str] = {}
    for d in order:
        target = targets[d.model]
        if target == 0:
            replicas[d.model] = ()
            continue
        kept = sticky.get(d.model, [])
        for name in kept[:target]:
            reserved[name] -= d.memory_mb
        reason = _reason(d, target, options)
        placed: list[Replica] = []
        for name in kept:
            if len(placed) < target and used[name] + d.memory_mb <= budget[name] + _EPS_MB:
                used[name] += d.memory_mb
                placed.append(Replica(name, f"{reason}; kept"))
        while len(placed) < target:
            taken = {r.instance for r in placed}
            fits = [n for n in budget
                    if n not in taken and used[n] + d.memory_mb <= budget[n] + _EPS_MB]
            if not fits:
                break
            free_of_others = [n for n in fits
                              if used[n] + reserved[n] + d.memory_mb <= budget[n] + _EPS_MB]
            pool = free_of_others or fits
            extra = reserved if free_of_others else dict.fromkeys(budget, 0.0)
            best = min(pool, key=lambda n: (-(budget[n] - used[n] - extra[n]), used[n], rank[n]))
            free = budget[best] - used[best] - extra[best]
            used[best] += d.memory_mb
            placed.append(Replica(best, f"{reason}; {_free_text(free)}"))
        replicas[d.model] = tuple(placed)
        if len(placed) < target:
            unplaced[d.model] = _short_reason(d, target, placed, accepting, budget, used)
    return ReplicaPlan(MappingProxyType(replicas), MappingProxyType(unplaced),
                       MappingProxyType(targets))


def _placement_order(d: ReplicaDemand) -> tuple[bool, float, str]:
    """Pinned first, then by forecast rate descending, ties by name."""
    return (not d.pinned, -d.rate_per_s, d.model)


def _validate(demands: Sequence[ReplicaDemand], instances: Sequence[InstanceCapacity],
              options: ReplicaOptions) -> None:
    if not (options.rate_per_replica > 0 and math.isfinite(options.rate_per_replica)):
        raise ValueError(f"rate_per_replica must be positive, got {options.rate_per_replica}")
    if options.pinned_replicas < 1 or options.max_replicas < 0:
        raise ValueError("pinned_replicas must be >= 1 and max_replicas >= 0, got "
                         f"{options.pinned_replicas} and {options.max_replicas}")
    names = [i.name for i in instances]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate instance names in {names}")
    for i in instances:
        if math.isnan(i.budget_mb) or i.budget_mb < 0:
            raise ValueError(f"instance {i.name!r}: budget_mb must be >= 0, got {i.budget_mb}")
    seen: set[str] = set()
    for d in demands:
        if d.model in seen:
            raise ValueError(f"model {d.model!r} demanded twice")
        seen.add(d.model)
        if not (d.memory_mb >= 0 and math.isfinite(d.memory_mb)):
            raise ValueError(f"model {d.model!r}: memory_mb must be >= 0, got {d.memory_mb}")
        if not (d.rate_per_s >= 0 and math.isfinite(d.rate_per_s)):
            raise ValueError(f"model {d.model!r}: rate_per_s must be >= 0, got {d.rate_per_s}")
        if d.max_replicas is not None and d.max_replicas < 1:
            raise ValueError(f"model {d.model!r}: max_replicas must be >= 1, "
                             f"got {d.max_replicas}")


def _asked(d: ReplicaDemand, options: ReplicaOptions) -> int:
    if not d.wanted:
        return 0
    asked = max(1, math.ceil(d.rate_per_s / options.rate_per_replica - 1e-9))
    return max(asked, options.pinned_replicas) if d.pinned else asked


def _target(d: ReplicaDemand, n_instances: int, options: ReplicaOptions) -> int:
    cap = options.max_replicas or n_instances
    if d.max_replicas is not None:
        cap = min(cap, d.max_replicas)
    return min(_asked(d, options), cap)


def _reason(d: ReplicaDemand, target: int, options: ReplicaOptions) -> str:
    rate = f"{d.rate_per_s:.3g} req/s forecast"
    plural = "replica" if target == 1 else "replicas"
    if d.pinned:
        return f"pinned: {rate}, {target} {plural}"
    if _asked(d, options) > 1:
        each = f"{options.rate_per_replica:g} req/s each"
        capped = "" if target == _asked(d, options) else f" (capped from {_asked(d, options)})"
        return f"hot: {rate}, {target} {plural}{capped} at {each}"
    return f"wanted: {rate}, 1 replica"


def _free_text(free_mb: float) -> str:
    free = "unlimited budget" if math.isinf(free_mb) else f"{free_mb:.0f} MB free"
    return f"placed where most budget was free ({free})"


def _short_reason(d: ReplicaDemand, target: int, placed: Sequence[Replica],
                  accepting: Sequence[InstanceCapacity], budget: Mapping[str, float],
                  used: Mapping[str, float]) -> str:
    asked = f"asked for {target}, placed {len(placed)}"
    if not accepting:
        return f"{asked}: no instance accepts replicas (all draining or down)"
    if len(accepting) < target:
        return f"{asked}: only {len(accepting)} instance(s) accepting"
    taken = {r.instance for r in placed}
    most = max((i for i in accepting if i.name not in taken),
               key=lambda i: budget[i.name] - used[i.name])
    return (f"{asked}: no other accepting instance has {d.memory_mb:.0f} MB free "
            f"(most: {most.name} with {budget[most.name] - used[most.name]:.0f} MB)")
