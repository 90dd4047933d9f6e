"""The autoscaler, live: the fleet's state in, instances started, promoted and retired out.

Every ``autoscaler.interval_s`` it takes a snapshot -- instances by state, and per model the
forecast rate now and the highest over the lead time (the measured start-to-warm time plus
``lead_margin_s``, read from the scheduler's policy on its thread), the measured rate,
requests in flight, serving replicas and recent against steady p50 latency -- and asks
:class:`~controlplane.policy.autoscale.Autoscaler` (the same code the simulator replays)
what to do. Then it acts through the membership: a scale-out promotes a standby first and
starts new instances (pre-warmed before they serve); a scale-in drains and retires the
least busy instance it added itself (those in the settings and the operator's are theirs to
remove); standby instances are started or retired to match. A serving instance's failure
promotes a standby at once, without waiting for the next pass. Each decision that did
something is kept (``GET /scaling``), recorded as a fleet action and counted in metrics.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane.config import Settings
from controlplane.errors import ConfigError
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.kubernetes import KubernetesProvider
from controlplane.fleet.load_watch import LoadWatch
from controlplane.fleet.membership import Membership
from controlplane.fleet.states import InstanceState
from controlplane.policy.autoscale import Autoscaler
from controlplane.policy.autoscale_types import (
    AutoscaleOptions,
    FleetSnapshot,
    ModelLoad,
    ScalingDecision,
)
from controlplane.types import InstanceName, ModelName

log = logging.getLogger(__name__)

#: (models, now, horizon_s) -> each model's highest forecast rate over the horizon
Forecast = Callable[[Sequence[ModelName], float, float], Awaitable[dict[ModelName, float | None]]]


@dataclass
class ScalingEvent:
    """One decision that did something, and what came of it."""

    decision: ScalingDecision
    instances: list[InstanceName] = field(default_factory=list)
    outcome: str = "ok"

    def as_dict(self) -> dict[str, Any]:
        d = self.decision.as_dict()
        d["at"] = datetime.fromtimestamp(self.decision.at, UTC).isoformat()
        return {**d, "instances": self.instances, "outcome": self.outcome}


class LiveAutoscaler:
    def __init__(self, fleet: Fleet, membership: Membership, settings: Settings,
                 load: LoadWatch, forecast: Forecast | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self.membership = membership
        self.settings = settings
        self.load = load
        self.forecast = forecast
        self.clock = clock
        self.template = settings.with_defaults(settings.autoscaler.template)
        self.options = AutoscaleOptions.of(settings.autoscaler, settings.fleet,
                                           self.template.memory_budget_mb)
        self.policy = Autoscaler(self.options)
        self.events: deque[ScalingEvent] = deque(maxlen=100)
        self.last: ScalingDecision | None = None
        #: decisions that acted, by action (metrics)
        self.counts: dict[str, int] = {}
        #: per model, the larger of the forecast over the lead time and the measured rate,
        #: from the last snapshot (the replica plan reads it: ``placement.py``)
        self.ahead_rates: dict[ModelName, float] = {}

    # -- the snapshot ---------------------------------------------------------------------
    def counts_by_state(self) -> dict[str, int]:
        found = dict.fromkeys(("provisioning", "warming", "standby", "serving", "draining",
                               "down", "restarting"), 0)
        for rt in [*self.fleet.order, *self.membership.joining.values()]:
            found[rt.state.value] = found.get(rt.state.value, 0) + 1
        return found

    def warm_up_s(self) -> float | None:
        """The p90 of the measured start-to-warm times; None before one was measured."""
        times = sorted(self.membership.warm_up_s)
        return times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)] if times else None

    async def snapshot(self) -> FleetSnapshot:
        fleet, now = self.fleet, self.clock()
        warm_up = self.warm_up_s()
        lead = self.policy.lead_for(warm_up)
        measured = self.load.measured()
        models = sorted(m for m in {*fleet.rates, *measured, *fleet.pinned}
                        if m in fleet.repository)
        ahead: dict[ModelName, float | None] = {}
        if self.forecast is not None and models:
            ahead = await self.forecast(models, now, lead)
        loads = []
        for model in models:
            serving = fleet.router.candidates(model)
            rate = fleet.rates.get(model, 0.0)
            loads.append(ModelLoad(
                model=model, memory_mb=fleet.memory_mb(model), forecast_rate_per_s=rate,
                forecast_ahead_per_s=max(rate, ahead.get(model) or 0.0),
                measured_rate_per_s=measured.get(model, 0.0),
                in_flight=sum(rt.upstream.by_model.get(model, 0) for rt in serving
                              if rt.upstream is not None),
                replicas=len(serving), p50_recent_s=self.load.p50_recent_s(model),
                p50_steady_s=self.load.p50_steady_s(model), pinned=model in fleet.pinned))
        self.ahead_rates = {m.model: max(m.forecast_ahead_per_s, m.measured_rate_per_s)
                            for m in loads}
        plan = fleet.plan
        unplaced = sum(max(0, plan.target(m) - len(plan.replicas.get(m, ())))
                       for m in plan.unplaced)
        by_state = self.counts_by_state()
        return FleetSnapshot(
            now=now, serving=by_state["serving"] + by_state["down"] + by_state["restarting"],
            warming=by_state["warming"] + by_state["provisioning"],
            standby=by_state["standby"], draining=by_state["draining"],
            models=tuple(loads), unplaced=unplaced, warm_up_s=warm_up)

    # -- acting ---------------------------------------------------------------------------
    async def step(self) -> ScalingDecision:
        """One pass: snapshot, decide, act."""
        decision = self.policy.decide(await self.snapshot())
        self.last = decision
        event = ScalingEvent(decision)
        try:
            if decision.action == "promote_standby":
                left = decision.count - len(self._promote(decision.count, decision, event))
                await self._add(left, decision, event)
            elif decision.action == "scale_out":
                await self._add(decision.count, decision, event)
            elif decision.action == "scale_in":
                await self._retire(decision.count, decision, event)
            await self._keep_standby(decision.standby_wanted, event)
        except Exception as exc:  # ours, or the Kubernetes API's: the decision is kept
            event.outcome = f"failed: {exc}"
            log.warning("autoscaler: %s: %s", decision.action, exc)
        if decision.action != "none" or event.instances:
            self.events.append(event)
            self.counts[decision.action] = self.counts.get(decision.action, 0) + 1
            why = "; ".join(decision.reasons)[:300]
            for name in event.instances or [""]:
                self.fleet.record(decision.action.replace("_", " "), "", name, why,
                                  event.outcome)
        return decision

    def _promote(self, count: int, decision: ScalingDecision, event: ScalingEvent
                 ) -> list[InstanceName]:
        standby = [rt for rt in self.fleet.order if rt.state is InstanceState.STANDBY]
        done = []
        for rt in standby[:count]:
            self.membership.promote(rt.name, "; ".join(decision.reasons)[:200])
            done.append(rt.name)
        event.instances.extend(done)
        return done

    def _kubernetes(self) -> KubernetesProvider | None:
        if self.settings.autoscaler.provider != "kubernetes":
            return None
        found = self.membership.providers.get("kubernetes")
        if not isinstance(found, KubernetesProvider):
            raise ConfigError("[autoscaler] provider = \"kubernetes\" needs [kubernetes] "
                              "enabled = true")
        return found

    async def _add(self, count: int, decision: ScalingDecision, event: ScalingEvent,
                   standby: bool = False) -> None:
        k8s = self._kubernetes()
        if k8s is not None:  # the new pods join through the watch, pre-warmed
            if count > 0 and not standby:  # a pod joins serving: no standby pods
                asked = await k8s.scale_to(await k8s.replicas() + count)
                event.instances.append(f"{self.settings.kubernetes.workload_name}={asked}")
            return
        for _ in range(max(0, count)):
            name = self._name()
            await self.membership.add(name, self.template, origin="autoscaler",
                                      standby=standby)
            event.instances.append(name)

    async def _retire(self, count: int, decision: ScalingDecision, event: ScalingEvent
                      ) -> None:
        k8s = self._kubernetes()
        origin = "kubernetes" if k8s is not None else "autoscaler"
        mine = sorted((rt for rt in self.fleet.order
                       if rt.origin == origin and rt.state is InstanceState.SERVING
                       and rt.name not in self.membership.leaving),
                      key=lambda rt: (rt.outstanding, rt.name))
        for rt in mine[:count]:
            if k8s is not None:
                # the ReplicaSet deletes the pod of lowest deletion cost when scaled down;
                # the pod's preStop outlasts the drain, so it serves until drained
                await k8s.mark_for_removal(rt.name, -1_000_000)
            self.membership.remove(rt.name, "scaled in: " + "; ".join(decision.reasons)[:200])
            event.instances.append(rt.name)
        if k8s is not None and mine[:count]:
            await k8s.scale_to(max(0, await k8s.replicas() - len(mine[:count])))
        if not mine:
            event.outcome = f"nothing to retire: no serving instance is the {origin}'s"

    async def _keep_standby(self, wanted: int, event: ScalingEvent) -> None:
        standby = [rt for rt in [*self.fleet.order, *self.membership.joining.values()]
                   if rt.origin == "autoscaler" and rt.name not in self.membership.leaving
                   and (rt.state is InstanceState.STANDBY
                        or (rt.phase in (InstanceState.PROVISIONING, InstanceState.WARMING)
                            and self.membership.standby_target(rt.name)))]
        if len(standby) < wanted:
            await self._add(wanted - len(standby), self.policy.history[-1]
                            if self.policy.history else self._none(), event, standby=True)
        for rt in standby[wanted:]:
            if rt.state is InstanceState.STANDBY:
                self.membership.remove(rt.name, "standby no longer wanted")
                event.instances.append(rt.name)

    def on_down(self, name: InstanceName, reason: str) -> None:
        """A serving instance's Triton went down: a standby takes its place at once."""
        standby = [rt for rt in self.fleet.order if rt.state is InstanceState.STANDBY]
        if not standby:
            return
        why = f"{name} stopped serving: {reason}"[:200]
        self.membership.promote(standby[0].name, why)
        decision = ScalingDecision(self.clock(), "promote_standby", 1, self.options.standby,
                                   (why,), self.counts_by_state()["serving"])
        self.events.append(ScalingEvent(decision, [standby[0].name]))
        self.counts["promote_standby"] = self.counts.get("promote_standby", 0) + 1
        self.fleet.record("promote standby", "", standby[0].name, why, "ok")

    def _name(self) -> InstanceName:
        taken = {*self.fleet.runtimes, *self.membership.joining}
        return next(f"auto-{k}" for k in range(1, 10_000) if f"auto-{k}" not in taken)

    def _none(self) -> ScalingDecision:
        return ScalingDecision(self.clock(), "none", 0, self.options.standby, (), 0)

    def view(self) -> dict[str, Any]:
        """``GET /scaling``."""
        return {
            "enabled": self.settings.autoscaler.enabled,
            "instances": self.counts_by_state(),
            "min_instances": self.options.min_instances,
            "max_instances": self.options.max_instances,
            "standby_target": self.options.standby,
            "warm_up_s": self.warm_up_s(),
            "lead_s": self.policy.lead_for(self.warm_up_s()),
            "last": None if self.last is None else ScalingEvent(self.last).as_dict(),
            "decisions": [e.as_dict() for e in reversed(self.events)],
        }
