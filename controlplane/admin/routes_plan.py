"""/plan: what the scheduler decided for every model, and why; where its replicas go."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fastapi import APIRouter

from controlplane.admin.deps import ControlPlaneDep
from controlplane.admin.schemas_fleet import FleetActionView
from controlplane.admin.schemas_plan import (
    ActionView,
    InstancePlanView,
    ModelPlanView,
    PlannedReplica,
    PlanView,
)
from controlplane.errors import Conflict, ControlPlaneError
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.views import describe
from controlplane.lifecycle.manager import ModelManager
from controlplane.lifecycle.states import ModelState
from controlplane.policy.registry import policy_spec
from controlplane.scheduler.levels import Level, own_level
from controlplane.store.models import LoadEvent

if TYPE_CHECKING:
    from controlplane.app import ControlPlane

router = APIRouter(tags=["plan"])


def load_times_by_level(events: list[LoadEvent]) -> dict[str, float]:
    """Median load-to-ready of recent successful loads, per level they started from.

    Device levels (``cpu``, ``gpu``) by where the model loaded; ``staged`` and ``cold`` by
    whether most of its files were in the page cache when the load began.
    """
    groups: dict[str, list[float]] = {}
    for e in events:
        if e.action != "load" or e.outcome != "ok" or e.duration_s is None:
            continue
        details = e.details or {}
        if "device" in details:
            groups.setdefault(str(details["device"]), []).append(e.duration_s)
        if "page_cache" in details:
            state = Level.STAGED if float(details["page_cache"]) >= 0.5 else Level.COLD
            groups.setdefault(state.value, []).append(e.duration_s)
    return {level: round(statistics.median(times), 3) for level, times in groups.items()}


def _own_level(manager: ModelManager, model: str, gpus: bool) -> Level:
    """Where a model the plan did not move runs: its config's kind (KIND_AUTO: the GPU where
    there is one, as Triton does)."""
    try:
        kind = manager.repository.spec(model).instance_kind
    except ControlPlaneError:
        kind = ""
    return own_level(kind) or (Level.GPU if gpus else Level.CPU)


def fleet_sections(fleet: Fleet) -> tuple[dict[str, list[PlannedReplica]],
                                           list[InstancePlanView]]:
    """The replica plan as data: model -> its planned replicas (instance, why, state there),
    and each instance's budget, memory used, resident and planned models."""
    replicas: dict[str, list[PlannedReplica]] = {}
    for model, placed in fleet.plan.replicas.items():
        here = {s.instance: s.state for s in fleet.replicas(model)} \
            if model in fleet.repository else {}
        replicas[model] = [PlannedReplica(instance=r.instance, why=r.why,
                                          state=here.get(r.instance)) for r in placed]
    instances = [InstancePlanView(
        name=d["name"], state=d["state"], routable=d["routable"], draining=d["draining"],
        memory_budget_mb=d["memory_budget_mb"], memory_used_mb=d["memory_used_mb"],
        planned=d["planned"], resident=sorted(d["models"])) for d in describe(fleet)]
    return replicas, instances


def _events(cp: ControlPlane, names: list[str]) -> dict[str, list[LoadEvent]]:
    """Each model's recent loads on every instance (synchronous: ``database.run`` it)."""
    found: dict[str, list[LoadEvent]] = {}
    for _, manager in cp.fleet.managers():
        for name in names:
            found.setdefault(name, []).extend(manager.store.events(name, limit=50))
    return found


async def _build(cp: ControlPlane, decisions: Mapping[str, object]) -> PlanView:
    assert cp.scheduler is not None and cp.manager is not None
    sched, manager, fleet = cp.scheduler, cp.manager, cp.fleet
    view = sched.view()
    statuses = fleet.statuses()
    replicas, instances = fleet_sections(fleet)
    unplaced = dict(fleet.plan.unplaced)
    events = await cp.database.call(_events, cp, [s.name for s in statuses])
    models = []
    for status in statuses:
        profile = sched.book.profiles.get(status.name)
        measured_memory, measured_load = sched.book.measured.get(status.name, (False, False))
        if status.state in (ModelState.READY, ModelState.WARMING, ModelState.LOADING):
            level = sched.device(status.name) or _own_level(manager, status.name,
                                                            sched.gpu_budget_mb > 0)
        elif status.name in sched.state.staged:
            level = Level.STAGED
        else:
            level = Level.COLD
        model = ModelPlanView.build(
            status, level, profile, measured_memory, measured_load,
            load_times_by_level(events.get(status.name, [])), decisions.get(status.name),
            held=status.name in sched.state.held)
        models.append(model.model_copy(update={
            "replicas": replicas.get(status.name, []), "unplaced": unplaced.get(status.name)}))
    return PlanView(
        # the knob the policy runs with: the configured one, else the policy's default
        policy=sched.options.policy,
        param=policy_spec(sched.options.policy).default_param
        if sched.options.param is None else sched.options.param,
        budget_mb=sched.options.memory_budget_mb,
        gpu_budget_mb=sched.gpu_budget_mb,
        resident_mb=round(view.resident_mb(), 1), at=view.now,
        next_wakeup=sched.next_wakeup(), last_tick=sched.state.last_tick,
        models=models,
        actions=[ActionView(**a.__dict__) for a in reversed(sched.state.actions[-50:])],
        jobs=[{"id": i, "next_run": t.isoformat() if t else None}
              for i, t in (cp.jobs.jobs() if cp.jobs else [])],
        instances=instances, unplaced=unplaced,
        fleet_actions=[FleetActionView.of(a) for a in list(fleet.actions)[::-1][:50]])


@router.get("/plan", response_model=PlanView)
async def plan(cp: ControlPlaneDep) -> PlanView:
    """Per model: expected requests and cold starts a day if lazy, the cost of keeping it
    warm, the decision and why, its warmth level and each level's measured load time, and
    its replicas (instance and why). Per instance: budget, memory used, resident and planned
    models. The scheduler's and the fleet's recent actions."""
    if cp.scheduler is None:
        raise Conflict("the scheduler is disabled (WARMCTL_SCHEDULER__ENABLED=false)")
    decisions = {d.model: d for d in await cp.scheduler.explain_decisions()}
    return await _build(cp, decisions)

