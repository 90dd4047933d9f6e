"""Replicas as data, applied: the policy's decisions become a replica plan per instance.

After each planning pass the scheduler hands over its decisions (forecast rates included);
:func:`controlplane.policy.replicas.plan_replicas` -- the same function the fleet simulator
runs -- decides how many replicas each model gets and where, under every instance's budget.
Here the plan is applied: replicas are added beside a ready one (``trigger="replica"``) and
surplus replicas go, never the last ready one, and never one the operator loaded on that
instance (it stays until the operator releases it; the plan says so). A removal stops routing
to the replica before Triton unloads it (``removal.py``). A model's first load stays the
scheduler's or the gateway's; its eviction (no replica at all) stays the policy's.

Each instance's own budget is also kept at load time (:meth:`ReplicaPlacer.make_room`): the
policy sees the fleet as one budget, so a load that lands on a full instance evicts that
instance's idle models, those with a ready replica elsewhere first, then least recently ready.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from controlplane.background import Background
from controlplane.config import FleetSettings
from controlplane.errors import ControlPlaneError
from controlplane.fleet.fleet import REPLICA_TRIGGER, RESIDENT, Fleet
from controlplane.fleet.removal import remove_replica
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.lifecycle.states import ModelState
from controlplane.policy.replicas import (
    InstanceCapacity,
    Replica,
    ReplicaDemand,
    ReplicaOptions,
    ReplicaPlan,
    plan_replicas,
)
from controlplane.policy.types import ModelDecision
from controlplane.types import ModelName

log = logging.getLogger(__name__)

#: decisions under which the policy wants a model resident now
WANTED = frozenset({"pinned", "keep"})
#: decisions under which it must not be loaded anywhere (the lifecycle forbids it)
REFUSED = frozenset({"unload", "disabled", "held cold", "failed"})
#: why a replica the operator loaded stays, whatever the plan
KEPT = "kept by the operator (loaded on this instance; `warmctl release` ends it)"


class ReplicaPlacer:
    def __init__(self, fleet: Fleet, options: FleetSettings) -> None:
        self.fleet = fleet
        self.options = ReplicaOptions(rate_per_replica=options.replica_rate_per_s,
                                      pinned_replicas=options.pinned_replicas,
                                      max_replicas=options.max_replicas)
        #: replica loads and unloads in flight
        self.background = Background()
        #: the scheduler's last decisions (a joining instance's plan is made from them)
        self.decisions: list[ModelDecision] = []
        #: requests per second measured per model over ``fleet.measured_rate_window_s``:
        #: a model's rate is the larger of it and the forecast's, so a burst gets replicas
        #: within seconds rather than when the day-long average catches up
        self.measured: Callable[[ModelName], float] = lambda model: 0.0
        #: the highest rate the forecast expects within the autoscaler's lead time, per
        #: model (empty without the autoscaler): replicas for a peak are planned -- and a
        #: joining instance pre-warmed -- before the peak, and kept through it
        self.ahead: Callable[[], dict[ModelName, float]] = dict

    def demands(self, decisions: Sequence[ModelDecision]) -> list[ReplicaDemand]:
        fleet, found = self.fleet, []
        ahead = self.ahead()
        for d in decisions:
            if d.model not in fleet.repository:
                continue
            resident = fleet.state(d.model) in RESIDENT
            wanted = d.decision in WANTED or (resident and d.decision not in REFUSED)
            if not wanted and not resident:
                # No replica to place or trim: left out of the plan (most of 10,000 models)
                continue
            spec = fleet.repository.spec(d.model)
            found.append(ReplicaDemand(
                model=d.model, memory_mb=fleet.memory_mb(d.model),
                rate_per_s=max(d.requests_per_day / 86400.0, self.measured(d.model),
                               ahead.get(d.model, 0.0)),
                wanted=wanted,
                pinned=d.decision == "pinned",
                # Triton's sequence batcher keeps a sequence's state on one server: every
                # request of a sequence must reach the same replica, so a stateful model
                # has one (a decoupled model's stream already sticks to one replica)
                max_replicas=1 if spec.sequence_batching else None))
        return found

    def plan(self, decisions: Sequence[ModelDecision], joining: str | None = None
             ) -> ReplicaPlan:
        """Replicas for ``decisions`` over the accepting instances (and ``joining``, an
        instance warming up to serve, as if it accepted already)."""
        fleet = self.fleet
        instances = [InstanceCapacity(rt.name, rt.budget_mb() or math.inf,
                                      accepting=rt.accepting or rt.name == joining)
                     for rt in fleet.order]
        current: dict[ModelName, list[str]] = {}
        kept: list[tuple[ModelName, str]] = []
        for rt, manager in fleet.managers():
            for s in manager.statuses():
                if s.state in RESIDENT:
                    current.setdefault(s.name, []).append(rt.name)
                    if s.kept:
                        kept.append((s.name, rt.name))
        return with_kept(plan_replicas(self.demands(decisions), instances, current,
                                       self.options), kept)

    async def apply(self, decisions: list[ModelDecision]) -> ReplicaPlan:
        """The scheduler's ``on_decisions`` hook: plan, then add and trim replicas."""
        fleet = self.fleet
        self.decisions = list(decisions)
        fleet.rates = {d.model: max(d.requests_per_day / 86400.0, self.measured(d.model))
                       for d in decisions}
        plan = fleet.plan = self.plan(decisions)
        if len(fleet.order) < 2:
            return plan
        for model, replicas in plan.replicas.items():
            ready = [rt for rt in fleet.router.candidates(model)]
            if not ready:
                continue  # its first load is the scheduler's or the gateway's
            planned = {r.instance: r.why for r in replicas}
            for rt, manager in fleet.managers():
                state = manager.state(model)
                if rt.name in planned and rt.routable and state is ModelState.COLD \
                        and manager.retry_at(model) is None and not manager.held(model):
                    self.background.spawn(self._add(rt, model, planned[rt.name]))
            surplus = [rt for rt in ready if rt.name not in planned
                       and rt.manager is not None and not rt.manager.kept(model)]
            keep = len(ready) - len(surplus)
            for rt in surplus[: len(surplus) if keep > 0 else len(surplus) - 1]:
                self.background.spawn(
                    self._trim(rt, model, f"{len(replicas)} replica(s) planned"))
        return plan

    async def follow_load(self) -> None:
        """Between the scheduler's passes: when a model's measured rate asks for more
        replicas than serve it, plan and apply again from the last decisions (a burst gets
        its replicas within seconds, not at the next planning pass)."""
        if not self.decisions or len(self.fleet.order) < 2:
            return
        rate = self.options.rate_per_replica
        behind = [d.model for d in self.decisions
                  if (m := self.measured(d.model)) > 0
                  and math.ceil(m / rate) > len(self.fleet.router.candidates(d.model))
                  and len(self.fleet.router.candidates(d.model)) < len(self.fleet.order)]
        if behind:
            log.info("replicas follow the measured load of %s", ", ".join(behind[:5]))
            await self.apply(self.decisions)

    def joining(self, rt: InstanceRuntime) -> list[ModelName]:
        """What ``rt`` loads before it serves: its replicas in the plan made as if it
        accepted them, pinned models first, then by rate (the hottest ready first)."""
        fleet = self.fleet
        if self.decisions:
            mine = list(self.plan(self.decisions, joining=rt.name).on(rt.name))
        else:  # no scheduler: pinned models short of their replicas, and those the
            # forecast over the lead time asks more replicas of than serve them
            rate = self.options.rate_per_replica
            mine = [m for m in fleet.pinned if not fleet.stateful(m) and sum(
                1 for o in fleet.order if o.serves(m)) < fleet.options.pinned_replicas]
            mine += [m for m, r in self.ahead().items()
                     if m in fleet.repository and m not in mine and not fleet.stateful(m)
                     and math.ceil(r / rate) > len(fleet.router.candidates(m))]
        return sorted(mine, key=lambda m: (m not in fleet.pinned, -fleet.rates.get(m, 0.0), m))

    async def _add(self, rt: InstanceRuntime, model: ModelName, why: str) -> None:
        try:
            await self.fleet.load(model, trigger=REPLICA_TRIGGER, instance=rt.name)
            self.fleet.record("add replica", model, rt.name, why, "ok")
        except ControlPlaneError as exc:
            self.fleet.record("add replica", model, rt.name, why, f"failed: {exc}")

    async def _trim(self, rt: InstanceRuntime, model: ModelName, why: str) -> None:
        try:
            # force: a pinned model's surplus replica goes too
            await remove_replica(self.fleet, rt, model, trigger=REPLICA_TRIGGER)
            self.fleet.record("remove replica", model, rt.name, why, "ok")
        except ControlPlaneError as exc:
            self.fleet.record("remove replica", model, rt.name, why, f"failed: {exc}")

    async def make_room(self, rt: InstanceRuntime, model: ModelName) -> None:
        """Before a load on ``rt`` (it is ``loading`` by then): keep ``rt`` within its own
        budget by unloading its idle models, replicated ones first."""
        fleet, budget = self.fleet, rt.budget_mb()
        if budget is None or len(fleet.order) < 2 or rt.manager is None:
            return
        need = fleet.used_mb(rt) - budget
        if need <= 0:
            return
        idle = [s for s in rt.manager.statuses()
                if s.state is ModelState.READY and not s.busy and not s.pinned and not s.kept
                and s.name != model and not fleet.held(s.name)]
        idle.sort(key=lambda s: (len(fleet.router.candidates(s.name)) < 2, s.since))
        for s in idle:
            if need <= 0:
                break
            try:
                await remove_replica(fleet, rt, s.name, trigger="make room")
                fleet.record("unload", s.name, rt.name, f"make room for {model} on {rt.name}",
                             "ok")
                need -= fleet.memory_mb(s.name)
            except ControlPlaneError as exc:
                log.warning("making room on %s for %s: %s", rt.name, model, exc)
        if need > 0:
            fleet.record("load", model, rt.name, f"over {rt.name}'s budget by {need:.0f} MB: "
                         "the rest is held by busy, pinned or held models", "warning")

    async def close(self) -> None:
        await self.background.close()


def with_kept(plan: ReplicaPlan, kept: Sequence[tuple[ModelName, str]]) -> ReplicaPlan:
    """``plan`` with each replica the operator keeps, where the policy did not place it."""
    if not kept:
        return plan
    replicas = {m: tuple(rs) for m, rs in plan.replicas.items()}
    for model, instance in kept:
        placed = replicas.get(model, ())
        if all(r.instance != instance for r in placed):
            replicas[model] = (*placed, Replica(instance, KEPT))
    return ReplicaPlan(replicas, plan.unplaced, plan.targets)
