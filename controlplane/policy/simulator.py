"""Discrete-event replay of a request trace against a policy.

Semantics (an independent scorer, :mod:`controlplane.policy.scoring`, recomputes every figure
from the trace, the models and the events):

* A request that finds its model READY is warm (waits 0). One that finds it LOADING is a cold
  start and waits until it is ready. One that finds it COLD is a cold start: the driver calls
  ``observe`` then ``on_demand``, applies the unloads returned, and starts the load at that
  instant; the request waits ``load_s``. A request exactly at a ready time is warm.
* A load holds its memory from its start; ``ready`` comes ``load_s`` later. Unloads are
  instantaneous; unloading a LOADING or a pinned model is refused (ignored). Pinned models are
  loaded at time 0.
* At equal times: ready events first, then ``plan`` (its unloads before its loads), then
  requests.
* ``plan`` runs every ``plan_period_s`` from time 0 and at each ``next_wakeup`` the policy asks
  for; the number of wakeups is capped, so a policy cannot stall the simulation.
* The live system's rules around the policy apply (:mod:`controlplane.policy.harness`): a plan
  loads only models that have had a request (the oracle, given the trace, knows every model of
  it from the start: it is a bound, not a live policy); on demand,
  idle models beyond the policy's evictions go, least recently ready first, when the policy's
  do not make room within the budget.
* The run ends at the last request: residency still open is closed there for memory_gb_s. Loads
  still in progress get their ready event after that time in the event list.

Requests come from the sorted trace and residency events from a heap, so each event costs
O(log n).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from controlplane.policy.harness import Harness, seeded
from controlplane.policy.oracle import Oracle
from controlplane.policy.types import (
    MB_PER_GB,
    Action,
    ClusterView,
    Event,
    Metrics,
    ModelProfile,
    Policy,
    Residency,
)

DEFAULT_PLAN_PERIOD_S = 10.0
#: Wakeups asked for at or before "now" run this much later (a policy cannot spin in place).
MIN_WAKEUP_DELAY_S = 1e-3
#: Trace second 0 is Monday 1970-01-05 00:00 UTC, so calendar features see a week starting Monday.
DEFAULT_EPOCH_OFFSET_S = 4 * 86400.0


@dataclass(frozen=True)
class SimResult:
    policy: str
    param: float | None
    budget_mb: float
    metrics: Metrics
    events: tuple[Event, ...]
    #: True when the policy asked for more wakeups than allowed and later ones were ignored.
    wakeups_capped: bool = False

    def summary(self) -> dict[str, object]:
        m = self.metrics
        return {"policy": self.policy, "param": self.param, "budget_mb": self.budget_mb,
                "requests": m.requests, "cold_starts": m.cold_starts,
                "cold_start_rate": m.cold_start_rate, "p99_wait_s": m.p99_wait_s,
                "mean_wait_s": m.mean_wait_s, "memory_gb_s": m.memory_gb_s,
                "budget_violations": m.budget_violations}


class _Cluster:
    """Residency bookkeeping of one simulation run."""

    def __init__(self, models: Mapping[str, ModelProfile], budget_mb: float) -> None:
        self.models = models
        self.budget_mb = budget_mb
        self.state: dict[str, Residency] = {name: Residency.COLD for name in models}
        self.state_view = MappingProxyType(self.state)
        self.models_view = MappingProxyType(dict(models))
        self.load_start: dict[str, float] = {}
        self.ready_at: dict[str, float] = {}
        #: model -> when it last became READY (least recently ready is evicted first)
        self.ready_since: dict[str, float] = {}
        self.used_mb = 0.0
        self.gb_s = 0.0
        self.violations = 0
        self.events: list[Event] = []
        self.ready_heap: list[tuple[float, int, str]] = []
        self._seq = 0

    def view(self, now: float) -> ClusterView:
        return ClusterView(now, self.budget_mb, self.models_view, self.state_view)

    def _profile(self, name: str) -> ModelProfile:
        profile = self.models.get(name)
        if profile is None:
            raise ValueError(f"policy acted on unknown model {name!r}")
        return profile

    def load(self, name: str, now: float) -> None:
        profile = self._profile(name)
        if self.state[name] is not Residency.COLD:
            return
        self.state[name] = Residency.LOADING
        self.load_start[name] = now
        self.used_mb += profile.memory_mb
        self.events.append(Event(now, name, "load_start"))
        if self.used_mb > self.budget_mb + 1e-6:
            self.violations += 1
        ready = now + profile.load_s
        self.ready_at[name] = ready
        self._seq += 1
        heapq.heappush(self.ready_heap, (ready, self._seq, name))

    def unload(self, name: str, now: float) -> None:
        profile = self._profile(name)
        if self.state[name] is not Residency.READY or profile.pinned:
            return  # nothing to do, or refused
        self.state[name] = Residency.COLD
        self.used_mb -= profile.memory_mb
        self.gb_s += profile.memory_mb / MB_PER_GB * (now - self.load_start.pop(name))
        self.events.append(Event(now, name, "unload"))

    def ready(self, now: float) -> None:
        _, _, name = heapq.heappop(self.ready_heap)
        self.state[name] = Residency.READY
        self.ready_since[name] = now
        self.events.append(Event(now, name, "ready"))

    def apply(self, actions: Sequence[Action], now: float, *, loads: bool = True) -> None:
        for action in actions:
            if action.kind == "unload":
                self.unload(action.model, now)
        if loads:
            for action in actions:
                if action.kind == "load":
                    self.load(action.model, now)

    def close(self, end: float) -> None:
        for name, start in self.load_start.items():
            self.gb_s += self.models[name].memory_mb / MB_PER_GB * max(0.0, end - start)
        while self.ready_heap:
            self.ready(self.ready_heap[0][0])


def simulate(trace: Sequence[tuple[float, str]], models: Mapping[str, ModelProfile],
             budget_mb: float, policy: Policy, *, param: float | None = None,
             plan_period_s: float = DEFAULT_PLAN_PERIOD_S,
             max_wakeups: int | None = None) -> SimResult:
    """Replay ``trace`` (sorted ``(time, model)`` rows) against ``policy``."""
    if plan_period_s <= 0:
        raise ValueError("plan_period_s must be positive")
    for profile in models.values():
        # A zero load time would make "cold" and "ready at arrival" the same instant.
        if profile.load_s <= 0:
            raise ValueError(f"model {profile.name!r}: load_s must be positive")
    cluster = _Cluster(models, budget_mb)
    harness = seeded([name for name, p in models.items() if p.pinned],
                     known_in_advance(policy, trace))
    n = len(trace)
    end = trace[-1][0] if n else 0.0
    wakeup_budget = max_wakeups if max_wakeups is not None else 20 * n + 100_000
    wakeups = 0
    capped = False
    pending: float | None = None  # the one policy wakeup scheduled
    next_periodic = 0.0
    cold_waits: list[float] = []
    wait_sum = 0.0

    def ask_wakeup(now: float) -> None:
        nonlocal pending, wakeups, capped
        wanted = policy.next_wakeup(now)
        if wanted is None or not math.isfinite(wanted):
            return
        wanted = max(wanted, now + MIN_WAKEUP_DELAY_S)
        if pending is not None and now < pending <= wanted:
            return  # an earlier one is already due; the policy is asked again then
        if wakeups >= wakeup_budget:
            capped = True
            return
        wakeups += 1
        pending = wanted

    for name, profile in models.items():
        if profile.pinned:
            cluster.load(name, 0.0)
    i = 0
    while i < n:
        t_request = trace[i][0]
        t_ready = cluster.ready_heap[0][0] if cluster.ready_heap else math.inf
        t_plan = next_periodic if pending is None else min(next_periodic, pending)
        if t_ready <= t_plan and t_ready <= t_request:
            cluster.ready(t_ready)
        elif t_plan <= t_request:
            now = t_plan
            if pending is not None and pending <= now:
                pending = None
            if next_periodic <= now:
                next_periodic = (math.floor(now / plan_period_s) + 1) * plan_period_s
            view = cluster.view(now)
            cluster.apply(harness.admit(policy.plan(view), view), now)
            ask_wakeup(now)
        else:
            now, model = trace[i]
            i += 1
            policy.observe(model, now)
            harness.observe(model)
            state = cluster.state.get(model)
            if state is None:
                raise ValueError(f"trace row {i}: unknown model {model!r}")
            if state is Residency.LOADING:
                wait = cluster.ready_at[model] - now
                cold_waits.append(wait)
                wait_sum += wait
            elif state is Residency.COLD:
                make_room(cluster, harness, policy, model, now)
                cluster.load(model, now)
                wait = models[model].load_s
                cold_waits.append(wait)
                wait_sum += wait
            ask_wakeup(now)
    cluster.close(end)
    return SimResult(
        policy=policy.name, param=param, budget_mb=budget_mb,
        metrics=Metrics(
            requests=n, cold_starts=len(cold_waits),
            cold_start_rate=len(cold_waits) / n if n else 0.0,
            p99_wait_s=_p99_with_zeros(cold_waits, n), mean_wait_s=wait_sum / n if n else 0.0,
            memory_gb_s=cluster.gb_s, budget_violations=cluster.violations),
        events=tuple(cluster.events), wakeups_capped=capped)


def known_in_advance(policy: Policy, trace: Sequence[tuple[float, str]]) -> set[str]:
    """Models a plan may load before their first request: the oracle's whole trace."""
    return {model for _, model in trace} if isinstance(policy, Oracle) else set()


def make_room(cluster: _Cluster, harness: Harness, policy: Policy, model: str,
              now: float) -> None:
    """Before an on-demand load of the COLD ``model``: the policy's evictions, then the
    harness's when those do not make room (as the live scheduler's ``make_room``)."""
    view = cluster.view(now)
    planned = [a for a in policy.on_demand(model, view) if a.kind == "unload"]
    extra, _ = harness.more_room(model, view, planned, cluster.ready_since)
    cluster.apply([*planned, *extra], now, loads=False)


def _p99_with_zeros(cold_waits: list[float], n: int) -> float:
    """Nearest-rank 99th percentile of ``n`` waits: the cold ones given, the rest zero."""
    if n == 0:
        return 0.0
    rank = math.ceil(0.99 * n)  # 1-based
    warm = n - len(cold_waits)
    if rank <= warm:
        return 0.0
    return sorted(cold_waits)[rank - warm - 1]
