"""Discrete-event replay of a request trace against a policy driving a fleet of instances.

The single-instance semantics (:mod:`controlplane.policy.simulator`) carry over, per replica:

* The policy runs fleet-wide, through the same harness as live. It sees a model as live shows
  it (the best replica): READY when any replica is, LOADING while one loads, COLD with none;
  its budget is the sum of the instances' budgets less the memory of replicas beyond each
  model's first. A plan's unload drops every replica (a loading one once it is ready). A
  plan's load starts one replica where the placement puts it, else (as a request for a COLD
  model, after the harness's fleet-wide room) on the instance with most free budget.
* After each periodic plan, and after any plan that loads,
  :func:`~controlplane.policy.replicas.plan_replicas` places replicas of the models the policy
  keeps resident: rates from the policy's forecast (``explain``) when it has one, else the
  model's requests over the last hour. As the live fleet (``controlplane.fleet.placement``):
  replicas are added beside a READY one, surplus replicas go only while another READY replica
  stays, unloads come before loads, and every load first evicts idle models on its instance
  (replicated ones first, then least recently ready) to keep that instance's budget; what
  loading or held models keep over it counts as a violation.
* A request is warm when any replica is READY; else it waits for the first replica to be ready.

:mod:`controlplane.policy.fleet_scoring` recomputes every figure from the events. With one
instance the figures equal the single-instance simulator's.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.policy.fleet_state import FleetState
from controlplane.policy.fleet_types import FleetEvent, FleetMetrics
from controlplane.policy.harness import Harness, seeded
from controlplane.policy.replicas import (
    InstanceCapacity,
    ReplicaDemand,
    ReplicaOptions,
    plan_replicas,
)
from controlplane.policy.simulator import (
    DEFAULT_PLAN_PERIOD_S,
    MIN_WAKEUP_DELAY_S,
    _p99_with_zeros,
    known_in_advance,
)
from controlplane.policy.types import Metrics, ModelProfile, Policy, Residency

#: observed rates (policies without a forecast) count the requests of this window
RATE_WINDOW_S = 3600.0


def instance_names(n: int) -> list[str]:
    """Names of the instances of ``simulate --instances n``: i1 .. in."""
    if n < 1:
        raise ValueError(f"a fleet needs at least one instance, got {n}")
    return [f"i{k}" for k in range(1, n + 1)]


@dataclass(frozen=True)
class FleetResult:
    policy: str
    param: float | None
    instances: tuple[InstanceCapacity, ...]
    options: ReplicaOptions
    metrics: FleetMetrics
    events: tuple[FleetEvent, ...]
    wakeups_capped: bool = False

    def summary(self) -> dict[str, object]:
        out: dict[str, Any] = {"policy": self.policy, "param": self.param,
                               "budget_mb": sum(i.budget_mb for i in self.instances),
                               "instances_budget_mb": {i.name: i.budget_mb
                                                       for i in self.instances}}
        out.update(self.metrics.summary())
        return out


class _Rates:
    """Requests per second per model over the last :data:`RATE_WINDOW_S`."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    def add(self, model: str, t: float) -> None:
        self._times.setdefault(model, deque()).append(t)

    def rate(self, model: str, now: float) -> float:
        times = self._times.get(model)
        if not times:
            return 0.0
        while times and times[0] <= now - RATE_WINDOW_S:
            times.popleft()
        return len(times) / RATE_WINDOW_S


def simulate_fleet(trace: Sequence[tuple[float, str]], models: Mapping[str, ModelProfile],
                   instances: Sequence[InstanceCapacity], policy: Policy, *,
                   options: ReplicaOptions | None = None, param: float | None = None,
                   plan_period_s: float = DEFAULT_PLAN_PERIOD_S,
                   max_wakeups: int | None = None) -> FleetResult:
    """Replay ``trace`` (sorted ``(time, model)`` rows) against ``policy`` over ``instances``."""
    if plan_period_s <= 0:
        raise ValueError("plan_period_s must be positive")
    if not instances:
        raise ValueError("a fleet needs at least one instance")
    for profile in models.values():
        if profile.load_s <= 0:
            raise ValueError(f"model {profile.name!r}: load_s must be positive")
    options = options or ReplicaOptions()
    fleet = FleetState(models, instances)
    harness = seeded([name for name, p in models.items() if p.pinned],
                     known_in_advance(policy, trace))
    rates = _Rates()
    # One instance holds one replica of a model, so rates are not needed there; and the
    # planner's explain is not free of effects on its later plans, so calling it would make
    # one instance differ from the single-instance simulator.
    explain = getattr(policy, "explain", None) if len(instances) > 1 else None

    def place(now: float, loading: Sequence[str]) -> None:
        """Replicas after a plan; ``loading``: the COLD models it loads, in its order."""
        forecast = ({d.model: d.requests_per_day / 86400.0 for d in explain(fleet.view(now))}
                    if explain is not None else None)
        demands = [ReplicaDemand(
            name, p.memory_mb,
            forecast.get(name, 0.0) if forecast is not None else rates.rate(name, now),
            wanted=fleet.kept(name) or name in loading,
            pinned=p.pinned) for name, p in models.items()]
        plan = plan_replicas(demands, instances, fleet.current(), options)
        for model in plan.replicas:
            planned = set(plan.instances_of(model))
            for name in list(fleet.replicas[model]):
                if name not in planned and fleet.ready_elsewhere(model, name):
                    fleet.unload(model, name, now)
        # The policy's loads first, in its order (as on one instance), where the plan puts
        # them; then replicas beside a ready one (a first load is the policy's or a request's).
        for model in loading:
            where = plan.instances_of(model)
            load_with_room(model, where[0] if where else fleet.choose(model), now)
        for model in plan.replicas:
            if fleet.any_ready(model):
                for name in plan.instances_of(model):
                    if name not in fleet.replicas[model]:
                        load_with_room(model, name, now)

    def load_with_room(model: str, instance: str, now: float) -> None:
        """As live: a load keeps its instance within budget by evicting idle models there
        (with one instance the fleet-wide room the harness makes is that room already)."""
        if len(instances) > 1:
            fleet.evict_for(model, instance, now, harness.held)
        fleet.load(model, instance, now)

    n = len(trace)
    end = trace[-1][0] if n else 0.0
    wakeup_budget = max_wakeups if max_wakeups is not None else 20 * n + 100_000
    wakeups = 0
    capped = False
    pending: float | None = None
    next_periodic = 0.0
    cold_waits: list[float] = []

    def ask_wakeup(now: float) -> None:
        nonlocal pending, wakeups, capped
        wanted = policy.next_wakeup(now)
        if wanted is None or not math.isfinite(wanted):
            return
        wanted = max(wanted, now + MIN_WAKEUP_DELAY_S)
        if pending is not None and now < pending <= wanted:
            return
        if wakeups >= wakeup_budget:
            capped = True
            return
        wakeups += 1
        pending = wanted

    place(0.0, [name for name, p in models.items() if p.pinned])
    i = 0
    while i < n:
        t_request = trace[i][0]
        t_ready = fleet.ready_heap[0][0] if fleet.ready_heap else math.inf
        t_plan = next_periodic if pending is None else min(next_periodic, pending)
        if t_ready <= t_plan and t_ready <= t_request:
            fleet.ready(t_ready)
        elif t_plan <= t_request:
            now = t_plan
            if pending is not None and pending <= now:
                pending = None
            periodic = next_periodic <= now
            if periodic:
                next_periodic = (math.floor(now / plan_period_s) + 1) * plan_period_s
            view = fleet.view(now)
            actions = harness.admit(policy.plan(view), view)
            for a in actions:
                if a.kind == "unload":
                    fleet.unload_all(a.model, now)
            loading = list(dict.fromkeys(
                a.model for a in actions
                if a.kind == "load" and fleet.state[a.model] is Residency.COLD))
            # Placement runs each plan period, and at a policy's wakeup when the plan loads.
            if periodic or loading:
                place(now, loading)
            ask_wakeup(now)
        else:
            now, model = trace[i]
            i += 1
            policy.observe(model, now)
            harness.observe(model)
            rates.add(model, now)
            if model not in models:
                raise ValueError(f"trace row {i}: unknown model {model!r}")
            if not fleet.any_ready(model):
                if fleet.replicas[model]:  # as live, it waits for the load in flight
                    fleet.revive(model, now)
                    cold_waits.append(fleet.first_ready(model) - now)
                else:
                    _on_demand(fleet, harness, policy, model, now)
                    cold_waits.append(models[model].load_s)
            ask_wakeup(now)
    fleet.close(end)
    total = Metrics(
        requests=n, cold_starts=len(cold_waits),
        cold_start_rate=len(cold_waits) / n if n else 0.0,
        p99_wait_s=_p99_with_zeros(cold_waits, n),
        mean_wait_s=math.fsum(cold_waits) / n if n else 0.0,
        memory_gb_s=math.fsum(fleet.gb_s.values()),
        budget_violations=sum(fleet.violations.values()))
    metrics = FleetMetrics(
        total=total, memory_gb_s=dict(fleet.gb_s), budget_violations=dict(fleet.violations),
        mean_replicas={m: (s / end if end > 0 else 0.0) for m, s in fleet.replica_s.items()},
        max_replicas=dict(fleet.max_replicas))
    return FleetResult(policy.name, param, tuple(instances), options, metrics,
                       tuple(fleet.events), capped)


def _on_demand(fleet: FleetState, harness: Harness, policy: Policy, model: str,
               now: float) -> None:
    """A request for a COLD model: the policy's evictions and the harness's, fleet-wide, then
    room on the chosen instance (idle replicas there, least needed first), then the load."""
    view = fleet.view(now)
    planned = [a for a in policy.on_demand(model, view) if a.kind == "unload"]
    extra, _ = harness.more_room(model, view, planned, fleet.ready_since)
    for a in [*planned, *extra]:
        fleet.unload_all(a.model, now)
    target = fleet.choose(model)
    if len(fleet.budget) > 1:
        fleet.evict_for(model, target, now, harness.held)
    fleet.load(model, target, now)

