"""One strategy's replay of a trace with instances joining and leaving (the bookkeeping of
:mod:`controlplane.policy.autoscale_sim`, whose docstring gives the rules)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controlplane.policy.autoscale import Autoscaler, forecast_ahead
from controlplane.policy.autoscale_types import AutoscaleOptions, FleetSnapshot, ModelLoad
from controlplane.policy.measured import RecentRates
from controlplane.policy.replicas import (
    InstanceCapacity,
    ReplicaDemand,
    ReplicaOptions,
    ReplicaPlan,
    plan_replicas,
)
from controlplane.policy.types import ModelProfile

Join = Literal["prewarmed", "on_demand", "empty"]


@dataclass(frozen=True)
class Strategy:
    name: str
    #: decisions read the forecast ahead (else only the measured load)
    forecast: bool
    join: Join


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("prewarmed", True, "prewarmed"), Strategy("reactive", False, "on_demand"),
    Strategy("unaware", False, "empty"))}


@dataclass
class _Instance:
    name: str
    started: float  # the decision that added it
    up: float  # booted
    warm: float  # routable from
    by_scale: bool
    loaded: dict[str, float] = field(default_factory=dict)  # model -> ready time
    used: dict[str, float] = field(default_factory=dict)  # model -> last request
    scale_caused: set[str] = field(default_factory=set)  # loads a scale event caused
    assigned: set[str] = field(default_factory=set)  # on_demand: models routed here
    retire: float = math.inf
    first_request: float | None = None

    def serving(self, t: float) -> bool:
        return self.warm <= t < self.retire

    def joining(self, t: float) -> bool:
        return t < self.warm and t < self.retire

    def ready(self, model: str, t: float) -> bool:
        return self.loaded.get(model, math.inf) <= t


def _background(inst: _Instance, model: str, ready: float) -> None:
    """A load no request waits to start (placement, pre-warming, a drain's move)."""
    inst.loaded[model] = ready
    inst.scale_caused.discard(model)


class Replay:
    """One strategy's replay: :meth:`seed`, then :meth:`tick` and :meth:`request` in time
    order."""

    def __init__(self, strategy: Strategy, models: Mapping[str, ModelProfile],
                 options: AutoscaleOptions, start: int, start_s: float,
                 forecaster: object | None) -> None:
        self.s, self.models, self.o = strategy, models, options
        self.start_s, self.forecaster = start_s, forecaster
        self.scaler = Autoscaler(options)
        self.recent = RecentRates(options.measured_window_s, max(1, len(models)))
        self.budget = options.instance_budget_mb or math.inf
        self.instances = [_Instance(f"i{k}", 0.0, 0.0, 0.0, False) for k in range(1, start + 1)]
        self.rr = dict.fromkeys(models, 0)
        self.waiting: dict[str, list[float]] = {m: [] for m in models}  # when each wait ends
        self.lost: set[str] = set()
        self.events: list[dict[str, Any]] = []

    def seed(self, counts: Mapping[str, int]) -> None:
        """The starting instances' models, ready at 0: one replica of each model of the trace
        where the plan puts it (model-aware), or every model that fits on every instance
        (unaware); ``counts``: requests per model, the busiest placed first."""
        busiest = sorted(counts, key=lambda m: (-counts[m], m))
        if self.s.join == "empty":
            for inst in self.instances:
                for model in busiest:
                    if self.free(inst) >= self.models[model].memory_mb - 1e-6:
                        _background(inst, model, 0.0)
            return
        demands = [ReplicaDemand(m, self.models[m].memory_mb, float(counts[m]), True,
                                 pinned=self.models[m].pinned) for m in busiest]
        caps = [InstanceCapacity(i.name, self.budget) for i in self.instances]
        every = ReplicaOptions(max(counts.values(), default=0) + 1.0, 1, 1)  # one replica each
        plan = plan_replicas(demands, caps, {}, every)
        by_name = {i.name: i for i in self.instances}
        for model in plan.replicas:
            for name in plan.instances_of(model):
                _background(by_name[name], model, 0.0)

    # -- decisions -----------------------------------------------------------------------------
    def rate_ahead(self, model: str, t: float, horizon: float) -> float:
        if not self.s.forecast or self.forecaster is None:
            return 0.0
        return forecast_ahead(self.forecaster, model, t, horizon) or 0.0

    def plan(self, t: float, lead: float, extra: Sequence[_Instance] = ()) -> ReplicaPlan:
        live = [i for i in self.instances if i.joining(t) or i.serving(t)] + list(extra)
        demands = []
        for name, p in self.models.items():
            rate = max(self.rate_ahead(name, t, lead), self.recent.rate(name, t))
            kept = any(name in i.loaded for i in live)
            demands.append(ReplicaDemand(name, p.memory_mb, rate, rate > 0 or kept or p.pinned,
                                         pinned=p.pinned))
        current = {m: [i.name for i in live if m in i.loaded or m in i.assigned]
                   for m in self.models}
        caps = [InstanceCapacity(i.name, self.budget) for i in live]
        return plan_replicas(demands, caps, current, ReplicaOptions(
            self.o.rate_per_replica, pinned_replicas=1, max_replicas=self.o.max_replicas))

    def tick(self, t: float) -> None:
        serving = [i for i in self.instances if i.serving(t)]
        joined = sorted(i.warm - i.started for i in self.instances if i.by_scale and i.warm <= t)
        warm_up = joined[min(len(joined) - 1, math.ceil(0.9 * len(joined)) - 1)] if joined else None
        lead = self.scaler.lead_for(warm_up)
        plan = self.plan(t, lead)
        loads = []
        for name, p in self.models.items():
            ends = self.waiting[name] = [e for e in self.waiting[name] if e > t]
            loads.append(ModelLoad(
                name, p.memory_mb, self.rate_ahead(name, t, 0.0), self.rate_ahead(name, t, lead),
                self.recent.rate(name, t), len(ends),
                sum(1 for i in serving if i.ready(name, t)), pinned=p.pinned))
        unplaced = sum(plan.target(m) - len(plan.instances_of(m)) for m in plan.unplaced)
        snap = FleetSnapshot(t, len(serving), sum(1 for i in self.instances if i.joining(t)), 0,
                             0, tuple(loads), unplaced, warm_up)
        decision = self.scaler.decide(snap)
        if decision.action == "scale_out":
            self.scale_out(t, decision.count, lead)
        elif decision.action == "scale_in":
            self.scale_in(t, serving)
        if decision.action != "none":
            self.events.append(decision.as_dict())
        if self.s.join != "empty":
            self.place(t, self.plan(t, lead))

    def scale_out(self, t: float, count: int, lead: float) -> None:
        n = len(self.instances)
        new = [_Instance(f"i{n + k}", t, t + self.start_s, t + self.start_s, True)
               for k in range(1, count + 1)]
        if self.s.join != "empty":
            plan = self.plan(t, lead, new)
            for inst in new:
                at = inst.up
                for model in plan.on(inst.name):
                    if self.s.join == "prewarmed":  # one load after another, then routed
                        at += self.models[model].load_s
                        _background(inst, model, at)
                    else:
                        inst.assigned.add(model)
                inst.warm = at
        self.instances += new

    def scale_in(self, t: float, serving: list[_Instance]) -> None:
        """Drain the newest instance; model-aware strategies first load elsewhere the models
        only it has ready (it serves until they are), the unaware one just lets it go."""
        gone = max(serving, key=lambda i: (i.started, i.name))
        rest = [i for i in serving if i is not gone]
        until = t
        for model in [m for m in gone.loaded if gone.ready(m, t)]:
            if any(i.ready(model, t) for i in rest):
                continue
            if self.s.join == "empty" or not rest:
                self.lost.add(model)
                continue
            if not any(model in i.loaded for i in rest):
                target = max(rest, key=lambda i: (self.free(i), i.name))
                _background(target, model, t + self.models[model].load_s)
            until = max(until, min(i.loaded.get(model, math.inf) for i in rest))
        gone.retire = until

    def place(self, t: float, plan: ReplicaPlan) -> None:
        """Apply the plan: new replicas load in the background (routed once ready), except on an
        ``on_demand`` newcomer (routed now, loaded by its first request); replicas planned away
        go once another replica is ready."""
        by_name = {i.name: i for i in self.instances}
        for model in plan.replicas:
            planned = set(plan.instances_of(model))
            for name in planned:
                inst = by_name[name]
                if self.s.join == "on_demand" and inst.by_scale:
                    inst.assigned.add(model)
                elif model not in inst.loaded:
                    _background(inst, model, max(t, inst.up) + self.models[model].load_s)
            for inst in self.instances:
                if inst.name not in planned and inst.serving(t) and model in inst.loaded and any(
                        i.ready(model, t) for i in self.instances
                        if i.name in planned and i.serving(t)):
                    del inst.loaded[model]
                    inst.assigned.discard(model)

    # -- requests ------------------------------------------------------------------------------
    def free(self, inst: _Instance) -> float:
        return self.budget - sum(self.models[m].memory_mb for m in inst.loaded)

    def request(self, t: float, model: str) -> tuple[float, bool]:
        """Route one request; (its wait for a load, whether a scale event caused it)."""
        self.recent.observe(model, t)
        observe = getattr(self.forecaster, "observe", None)
        if callable(observe):
            observe(model, t)
        serving = [i for i in self.instances if i.serving(t)]
        ready = [i for i in serving if i.ready(model, t)]
        if self.s.join == "empty":
            cands = serving
        elif self.s.join == "on_demand":
            cands = ready + [i for i in serving if model in i.assigned and i not in ready]
        else:
            cands = ready
        if cands:
            pick = cands[self.rr[model] % len(cands)]
            self.rr[model] += 1
        else:  # nothing routable has it: wait for a load in flight, else load where most fits
            loading = [i for i in serving if model in i.loaded]
            pick = (min(loading, key=lambda i: i.loaded[model]) if loading
                    else max(serving, key=lambda i: (self.free(i), i.name)))
        if pick.first_request is None:
            pick.first_request = t
        pick.used[model] = t
        if model not in pick.loaded:
            self.load_on_demand(pick, model, t, caused=bool(
                model in self.lost or (pick.by_scale and len(ready) > 0)))
        wait = max(0.0, pick.loaded[model] - t)
        if wait > 0:
            self.waiting[model].append(t + wait)
        return wait, wait > 0 and model in pick.scale_caused

    def load_on_demand(self, inst: _Instance, model: str, t: float, *, caused: bool) -> None:
        need = self.models[model].memory_mb
        idle = sorted((inst.used.get(m, -math.inf), m) for m in inst.loaded if inst.ready(m, t))
        for _, victim in idle:  # least recently used first, while it does not fit
            if self.free(inst) >= need - 1e-6:
                break
            del inst.loaded[victim]
        inst.loaded[model] = t + self.models[model].load_s
        self.lost.discard(model)
        if caused:
            inst.scale_caused.add(model)
        else:
            inst.scale_caused.discard(model)
