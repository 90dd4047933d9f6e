"""Response bodies of ``GET /plan``: the scheduler's decisions, the replica plan, and each
instance's part of it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from controlplane.admin.schemas_fleet import FleetActionView
from controlplane.lifecycle.states import ModelState, ModelStatus


class PlannedReplica(BaseModel):
    instance: str
    why: str
    #: the model's state on that instance now (cold: the plan's replica is not there yet)
    state: ModelState | None


class InstancePlanView(BaseModel):
    """One instance's part of the plan: its budget, what it holds and what is planned."""

    name: str
    state: str
    routable: bool
    draining: bool
    memory_budget_mb: float | None
    memory_used_mb: float
    planned: list[str]
    resident: list[str]


class ActionView(BaseModel):
    at: float
    kind: str
    model: str
    reason: str
    outcome: str


class ModelPlanView(BaseModel):
    model: str
    state: ModelState
    #: gpu, cpu (loaded there), staged (files in the page cache) or cold
    level: str
    pinned: bool
    #: held by a pin or an operator rule right now
    held: bool
    memory_mb: float | None
    memory_measured: bool
    load_s: float | None
    load_measured: bool
    #: median measured load-to-ready per level the load started from
    load_s_by_level: dict[str, float]
    requests_per_day: float | None
    cold_starts_per_day_if_lazy: float | None
    warm_cost_gbh_per_day: float | None
    decision: str | None
    preload_at: float | None
    why: str | None
    #: where the replica plan puts it, and why (fleet-wide; one entry per replica)
    replicas: list[PlannedReplica] = []
    #: why it got fewer replicas than asked for, or none; None when it got them all
    unplaced: str | None = None

    @classmethod
    def build(cls, status: ModelStatus, level: Any, profile: Any, measured_memory: bool,
              measured_load: bool, by_level: dict[str, float], decision: Any,
              held: bool) -> ModelPlanView:
        return cls(
            model=status.name, state=status.state, level=str(level.value), pinned=status.pinned,
            held=held,
            memory_mb=round(profile.memory_mb, 1) if profile else None,
            memory_measured=measured_memory,
            load_s=round(profile.load_s, 3) if profile else None, load_measured=measured_load,
            load_s_by_level=by_level,
            requests_per_day=getattr(decision, "requests_per_day", None),
            cold_starts_per_day_if_lazy=getattr(decision, "cold_starts_per_day_if_lazy", None),
            warm_cost_gbh_per_day=getattr(decision, "warm_cost_gbh_per_day", None),
            decision=getattr(decision, "decision", None),
            preload_at=getattr(decision, "preload_at", None),
            why=getattr(decision, "why", None),
        )


class PlanView(BaseModel):
    policy: str
    param: float | None
    budget_mb: float | None
    gpu_budget_mb: float
    resident_mb: float
    at: float
    next_wakeup: float | None
    last_tick: float | None
    models: list[ModelPlanView]
    #: the scheduler's recent actions, newest first
    actions: list[ActionView]
    #: persisted APScheduler jobs
    jobs: list[dict[str, Any]]
    #: per instance: budget, memory used, models resident and planned there
    instances: list[InstancePlanView] = []
    #: wanted models with fewer replicas than asked for -> why
    unplaced: dict[str, str] = {}
    #: what the fleet did on its own (replicas, failovers, drains), newest first
    fleet_actions: list[FleetActionView] = []
