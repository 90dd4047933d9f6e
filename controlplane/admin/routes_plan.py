"""/plan: what the scheduler decided for every model, and why."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fastapi import APIRouter

from controlplane.admin.deps import ControlPlaneDep
from controlplane.admin.schemas import ActionView, ModelPlanView, PlanView
from controlplane.errors import Conflict, ControlPlaneError
from controlplane.lifecycle.manager import ModelManager
from controlplane.lifecycle.states import ModelState
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


def _build(cp: ControlPlane, decisions: Mapping[str, object]) -> PlanView:
    assert cp.scheduler is not None and cp.manager is not None
    sched, manager = cp.scheduler, cp.manager
    view = sched.view()
    models = []
    for status in manager.statuses():
        profile = sched.book.profiles.get(status.name)
        measured_memory, measured_load = sched.book.measured.get(status.name, (False, False))
        events = manager.store.events(status.name, limit=50)
        if status.state in (ModelState.READY, ModelState.WARMING, ModelState.LOADING):
            level = sched.device(status.name) or _own_level(manager, status.name,
                                                            sched.gpu_budget_mb > 0)
        elif status.name in sched.state.staged:
            level = Level.STAGED
        else:
            level = Level.COLD
        models.append(ModelPlanView.build(
            status, level, profile, measured_memory, measured_load,
            load_times_by_level(events), decisions.get(status.name),
            held=status.name in sched.state.held))
    return PlanView(
        policy=sched.options.policy, param=sched.options.param,
        budget_mb=sched.options.memory_budget_mb,
        gpu_budget_mb=sched.gpu_budget_mb,
        resident_mb=round(view.resident_mb(), 1), at=view.now,
        next_wakeup=sched.next_wakeup(), last_tick=sched.state.last_tick,
        models=models,
        actions=[ActionView(**a.__dict__) for a in reversed(sched.state.actions[-50:])],
        jobs=[{"id": i, "next_run": t.isoformat() if t else None}
              for i, t in (cp.jobs.jobs() if cp.jobs else [])])


@router.get("/plan", response_model=PlanView)
async def plan(cp: ControlPlaneDep) -> PlanView:
    """Per model: expected requests and cold starts a day if lazy, the cost of keeping it
    warm, the decision and why, its warmth level and each level's measured load time."""
    if cp.scheduler is None:
        raise Conflict("the scheduler is disabled (WARMCTL_SCHEDULER__ENABLED=false)")
    decisions = {d.model: d for d in await cp.scheduler.explain_decisions()}
    return await cp.database.run(_build, cp, decisions)
