"""Replica bookkeeping of one fleet simulation: per (model, instance) residency and memory."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

from controlplane.policy.fleet_types import FleetEvent
from controlplane.policy.replicas import InstanceCapacity
from controlplane.policy.types import MB_PER_GB, ClusterView, ModelProfile, Residency

_EPS_MB = 1e-6


def rank_instances(instances: Sequence[InstanceCapacity]) -> dict[str, int]:
    return {i.name: k for k, i in enumerate(instances)}


class FleetState:
    def __init__(self, models: Mapping[str, ModelProfile],
                 instances: Sequence[InstanceCapacity]) -> None:
        self.models = models
        self.models_view = MappingProxyType(dict(models))
        self.budget = {i.name: i.budget_mb for i in instances}
        self.accepting = [i.name for i in instances if i.accepting] or list(self.budget)
        self.rank = rank_instances(instances)
        #: model -> instance -> LOADING or READY
        self.replicas: dict[str, dict[str, Residency]] = {name: {} for name in models}
        #: the policy's view, as live (the best replica): READY when any replica is; a model
        #: the policy unloaded is COLD to it while replicas still load to be dropped
        self.state: dict[str, Residency] = dict.fromkeys(models, Residency.COLD)
        #: loading replicas of models the policy unloaded: they go as soon as they are ready
        self.doomed: set[tuple[str, str]] = set()
        self.state_view = MappingProxyType(self.state)
        self.load_start: dict[tuple[str, str], float] = {}
        self.ready_at: dict[tuple[str, str], float] = {}
        #: model -> when it last became READY fleet-wide
        self.ready_since: dict[str, float] = {}
        self.used = dict.fromkeys(self.budget, 0.0)
        self.gb_s = dict.fromkeys(self.budget, 0.0)
        self.violations = dict.fromkeys(self.budget, 0)
        self.replica_s = dict.fromkeys(models, 0.0)
        self.max_replicas = dict.fromkeys(models, 0)
        self.events: list[FleetEvent] = []
        self.ready_heap: list[tuple[float, int, str, str]] = []
        self._seq = 0

    # -- what the policy and the placement see -----------------------------------------------
    def view(self, now: float) -> ClusterView:
        extra = sum(self.models[m].memory_mb * (len(r) - 1)
                    for m, r in self.replicas.items() if len(r) > 1)
        return ClusterView(now, sum(self.budget.values()) - extra, self.models_view,
                           self.state_view)

    def current(self) -> dict[str, tuple[str, ...]]:
        return {m: tuple(r) for m, r in self.replicas.items() if r}

    def kept(self, model: str) -> bool:
        """Resident or loading on some instance, and not being unloaded by the policy."""
        return any((model, name) not in self.doomed for name in self.replicas[model])

    def any_ready(self, model: str) -> bool:
        return any(s is Residency.READY for s in self.replicas[model].values())

    def first_ready(self, model: str) -> float:
        return min(self.ready_at[(model, name)] for name in self.replicas[model])

    def ready_elsewhere(self, model: str, instance: str) -> bool:
        return any(s is Residency.READY for name, s in self.replicas[model].items()
                   if name != instance)

    def free(self, name: str) -> float:
        return self.budget[name] - self.used[name]

    def fits(self, model: str, instance: str) -> bool:
        return self.used[instance] + self.models[model].memory_mb <= (
            self.budget[instance] + _EPS_MB)

    def choose(self, model: str) -> str:
        """The accepting instance with most free budget where ``model`` fits, else the one with
        most free budget; ties: least used, then the instances' order."""
        free = [n for n in self.accepting if n not in self.replicas[model]]
        fits = [n for n in free if self.fits(model, n)]
        return min(fits or free or self.accepting,
                   key=lambda n: (-self.free(n), self.used[n], self.rank[n]))

    # -- changes ------------------------------------------------------------------------------
    def _refresh(self, model: str, now: float) -> None:
        states = [s for name, s in self.replicas[model].items()
                  if (model, name) not in self.doomed]
        was = self.state[model]
        if not states:
            self.state[model] = Residency.COLD
        elif any(s is Residency.READY for s in states):
            self.state[model] = Residency.READY
            if was is not Residency.READY:
                self.ready_since[model] = now
        else:
            self.state[model] = Residency.LOADING

    def load(self, model: str, instance: str, now: float) -> None:
        if instance in self.replicas[model]:
            self.doomed.discard((model, instance))  # wanted again after all
            self._refresh(model, now)
            return
        profile = self.models[model]
        self.replicas[model][instance] = Residency.LOADING
        self.max_replicas[model] = max(self.max_replicas[model], len(self.replicas[model]))
        self.load_start[(model, instance)] = now
        self.used[instance] += profile.memory_mb
        self.events.append(FleetEvent(now, model, "load_start", instance))
        if self.used[instance] > self.budget[instance] + _EPS_MB:
            self.violations[instance] += 1
        ready = now + profile.load_s
        self.ready_at[(model, instance)] = ready
        self._seq += 1
        heapq.heappush(self.ready_heap, (ready, self._seq, model, instance))
        self._refresh(model, now)

    def unload(self, model: str, instance: str, now: float) -> None:
        """Unload one replica; refused (ignored) unless READY, and for pinned models."""
        profile = self.models[model]
        if self.replicas[model].get(instance) is not Residency.READY or profile.pinned:
            return
        del self.replicas[model][instance]
        self.used[instance] -= profile.memory_mb
        held = now - self.load_start.pop((model, instance))
        self.gb_s[instance] += profile.memory_mb / MB_PER_GB * held
        self.replica_s[model] += held
        self.events.append(FleetEvent(now, model, "unload", instance))
        self._refresh(model, now)

    def unload_all(self, model: str, now: float) -> None:
        """The policy's unload (refused unless some replica is READY): the READY replicas
        now, the loading ones as soon as they are ready."""
        if self.state[model] is not Residency.READY or self.models[model].pinned:
            return
        for name in sorted(self.replicas[model], key=self.rank.__getitem__):
            if self.replicas[model][name] is Residency.READY:
                self.unload(model, name, now)
            else:
                self.doomed.add((model, name))
        self._refresh(model, now)

    def revive(self, model: str, now: float) -> None:
        """``model`` is wanted again (a request): its loading replicas stay after all."""
        self.doomed -= {(model, name) for name in self.replicas[model]}
        self._refresh(model, now)

    def evict_for(self, model: str, instance: str, now: float, held: Collection[str]) -> None:
        """Idle READY replicas on ``instance`` go until ``model`` fits there: replicas of
        models served elsewhere too first, then least recently ready; held models stay."""
        need = self.used[instance] + self.models[model].memory_mb - self.budget[instance]
        idle = sorted((not self.ready_elsewhere(m, instance), self.ready_since.get(m, 0.0), m)
                      for m, r in self.replicas.items()
                      if r.get(instance) is Residency.READY and m not in held and m != model)
        for _, _, name in idle:
            if need <= _EPS_MB:
                break
            self.unload(name, instance, now)
            need -= self.models[name].memory_mb

    def ready(self, now: float) -> None:
        _, _, model, instance = heapq.heappop(self.ready_heap)
        if self.replicas[model].get(instance) is not Residency.LOADING:
            return
        self.replicas[model][instance] = Residency.READY
        self.events.append(FleetEvent(now, model, "ready", instance))
        if (model, instance) in self.doomed:
            self.doomed.discard((model, instance))
            self.unload(model, instance, now)
        else:
            self._refresh(model, now)

    def close(self, end: float) -> None:
        for (model, instance), start in self.load_start.items():
            held = max(0.0, end - start)
            self.gb_s[instance] += self.models[model].memory_mb / MB_PER_GB * held
            self.replica_s[model] += held
        while self.ready_heap:
            self.ready(self.ready_heap[0][0])
