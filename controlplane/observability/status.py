"""The operator's overview, one view model for ``GET /status``, the page and the gauges.

Built on the event loop from the parts' own state (manager, scheduler, supervisor), plus one
database pass for the per-minute usage and each model's last load. Shaped for a fleet:
``instances`` lists every Triton instance; a model's fields are its best replica's (the one
the gateway would use) and ``instances`` in a model lists it on each instance.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import select

from controlplane.errors import ControlPlaneError
from controlplane.lifecycle.states import ModelState, ModelStatus
from controlplane.scheduler.levels import Level, own_level
from controlplane.store.models import UsageMinute

if TYPE_CHECKING:
    from controlplane.app import ControlPlane
    from controlplane.fleet.runtime import InstanceRuntime

#: states in which a model holds memory
HOLDING = (ModelState.READY, ModelState.WARMING, ModelState.LOADING, ModelState.UNLOADING)


class MemoryLevel(BaseModel):
    #: ``gpu`` or ``cpu``: where the models counted here run
    level: str
    resident_mb: float
    #: the budget this level is held against (host memory for ``cpu``); None: unlimited
    budget_mb: float | None


class InstanceStatus(BaseModel):
    name: str
    #: live, unresponsive, down, restarting, failed, stopped, or starting
    triton: str
    triton_reason: str | None
    restarts_in_window: int
    grpc_url: str | None
    #: Triton's own Prometheus endpoint, for a scraper
    metrics_url: str | None
    memory: list[MemoryLevel]
    #: embedded (started here) or static (attached to)
    provider: str = "embedded"
    #: serving and not draining: the router may send it requests
    routable: bool = False
    draining: bool = False
    #: requests in flight on it now
    outstanding: int = 0
    #: its own host-memory budget (None: unlimited) and what its resident models hold
    memory_budget_mb: float | None = None
    memory_used_mb: float = 0.0
    #: resident models -> state
    models: dict[str, str] = {}
    #: models the replica plan puts here
    planned: list[str] = []
    #: model -> why its replica here failed its health check (``fleet/health.py``)
    unhealthy: dict[str, str] = {}


class ReplicaOverview(BaseModel):
    """A model on one instance."""

    instance: str
    state: ModelState
    level: str
    #: ready on an instance that serves and is not draining, and healthy
    routable: bool
    #: why it failed its health check (no traffic until a probe passes); None: healthy
    unhealthy: str | None = None


class LastLoad(BaseModel):
    started_at: float
    trigger: str
    outcome: str | None
    duration_s: float | None
    triton_s: float | None
    warmup_s: float | None
    probe_s: float | None
    probe_count: int | None
    error: str | None


class ModelOverview(BaseModel):
    name: str
    instance: str
    state: ModelState
    reason: str | None
    #: gpu, cpu, staged (files in the page cache) or cold
    level: str
    pinned: bool
    held: bool
    #: Triton instances of the fleet the model is ready on
    replicas: int
    memory_mb: float | None
    last_load: LastLoad | None
    #: totals over the window, and requests per minute (oldest first, ``minutes`` long)
    requests: int
    cold_starts: int
    per_minute: list[int]
    decision: str | None
    why: str | None
    #: unix seconds of the next scheduled preload
    preload_at: float | None
    #: the model on each Triton instance (fleet order)
    instances: list[ReplicaOverview] = []
    #: replicas the last replica plan wants; None before the first plan (or without one)
    planned_replicas: int | None = None
    #: model instances in each replica (config.pbtxt's instance_group count); None when the
    #: config cannot be read
    instances_per_replica: int | None = None
    #: its unhealthy replicas' reasons, "instance: reason; ..."; None: none
    unhealthy: str | None = None


class StatusView(BaseModel):
    at: float
    minutes: int
    #: unix minute of ``per_minute[0]``
    first_minute: int
    instances: list[InstanceStatus]
    models: list[ModelOverview]
    #: (model, unix seconds), soonest first
    next_preloads: list[tuple[str, float]]
    #: version rollouts in progress (none until models have versions to roll)
    rollouts: list[dict[str, Any]]


def level_of(cp: ControlPlane, status: ModelStatus) -> Level:
    """Where a model is: the plan's device, its config's kind, staged or cold."""
    sched = cp.scheduler
    if status.state in HOLDING:
        placed = sched.device(status.name) if sched is not None else None
        if placed is not None:
            return placed
        try:
            kind = cp.repository.spec(status.name).instance_kind
        except ControlPlaneError:
            kind = ""
        gpus = sched is not None and sched.gpu_budget_mb > 0
        return own_level(kind) or (Level.GPU if gpus else Level.CPU)
    if sched is not None and status.name in sched.state.staged:
        return Level.STAGED
    return Level.COLD


def memory_mb(cp: ControlPlane, status: ModelStatus) -> float | None:
    profile = cp.scheduler.book.profiles.get(status.name) if cp.scheduler else None
    if profile is not None:
        return float(profile.memory_mb)
    return status.memory_bytes / 2**20 if status.memory_bytes else None


def memory_levels(cp: ControlPlane, statuses: list[ModelStatus],
                  rt: InstanceRuntime | None = None) -> list[MemoryLevel]:
    """Memory held per level by ``statuses``, against the scheduler's budgets (one
    instance: they are its own) or ``rt``'s configured ones (one of several)."""
    held = {Level.GPU: 0.0, Level.CPU: 0.0}
    for s in statuses:
        level = level_of(cp, s)
        if level in held and s.state in HOLDING:
            held[level] += memory_mb(cp, s) or 0.0
    sched = cp.scheduler
    host = sched.options.memory_budget_mb if sched is not None else None
    gpu = sched.gpu_budget_mb if sched is not None else None
    if rt is not None and len(cp.fleet.order) > 1:
        host, gpu = rt.budget_mb(), rt.spec.gpu_memory_budget_mb
    return [MemoryLevel(level="gpu", resident_mb=round(held[Level.GPU], 1), budget_mb=gpu),
            MemoryLevel(level="cpu", resident_mb=round(held[Level.CPU], 1), budget_mb=host)]


def _from_db(cp: ControlPlane, names: list[str], since_minute: int
             ) -> tuple[dict[str, dict[int, tuple[int, int]]], dict[str, LastLoad]]:
    """(model -> minute -> (requests, cold starts), model -> last load). Synchronous."""
    usage: dict[str, dict[int, tuple[int, int]]] = {}
    with cp.database.session() as session:
        for row in session.execute(
                select(UsageMinute.model, UsageMinute.minute, UsageMinute.requests,
                       UsageMinute.cold_starts).where(UsageMinute.minute >= since_minute)):
            usage.setdefault(row[0], {})[row[1]] = (row[2], row[3])
    last: dict[str, LastLoad] = {}
    stores = [m.store for _, m in cp.fleet.managers()]
    for name in names:
        events = [e for store in stores for e in store.events(name, limit=10)
                  if e.action in ("load", "reload")]
        if events:  # the newest on any instance
            e = max(events, key=lambda e: (e.started_at, e.id))
            last[name] = LastLoad(
                started_at=e.started_at.timestamp(), trigger=e.trigger, outcome=e.outcome,
                duration_s=e.duration_s, triton_s=e.triton_s, warmup_s=e.warmup_s,
                probe_s=e.probe_s, probe_count=e.probe_count, error=e.error)
    return usage, last


async def build_status(cp: ControlPlane, minutes: int = 180, *,
                       history: bool = True) -> StatusView:
    """The overview over the last ``minutes`` of usage (the heatmap's width). Without
    ``history`` (the gauges' scrape) usage and last loads are left empty: no database."""
    now = time.time()
    first = int(now // 60) - minutes + 1
    fleet = cp.fleet
    statuses = fleet.statuses() if fleet.managers() else []
    decisions = ({d.model: d for d in await cp.scheduler.explain_decisions()}
                 if cp.scheduler is not None else {})
    usage: dict[str, dict[int, tuple[int, int]]] = {}
    last: dict[str, LastLoad] = {}
    if history:
        usage, last = await cp.database.call(_from_db, cp, [s.name for s in statuses], first)
    models = []
    for s in statuses:
        series = usage.get(s.name, {})
        per_minute = [series.get(first + i, (0, 0))[0] for i in range(minutes)]
        d = decisions.get(s.name)
        try:
            per_replica: int | None = cp.repository.spec(s.name).instance_count
        except ControlPlaneError:
            per_replica = None
        replicas = replica_overviews(cp, s.name)
        planned = fleet.plan.replicas.get(s.name)
        mem = memory_mb(cp, s)
        models.append(ModelOverview(
            name=s.name, instance=s.instance, state=s.state, reason=s.reason,
            level=level_of(cp, s).value, pinned=s.pinned,
            held=s.held or (cp.scheduler is not None and s.name in cp.scheduler.state.held),
            replicas=sum(r.state is ModelState.READY for r in replicas),
            planned_replicas=None if planned is None else len(planned),
            instances_per_replica=per_replica, memory_mb=None if mem is None else round(mem, 1),
            last_load=last.get(s.name), requests=sum(per_minute),
            cold_starts=sum(c for _, c in series.values()),
            per_minute=per_minute, decision=getattr(d, "decision", None),
            why=getattr(d, "why", None), preload_at=getattr(d, "preload_at", None),
            instances=replicas, unhealthy="; ".join(
                f"{r.instance}: {r.unhealthy}" for r in replicas if r.unhealthy) or None))
    preloads = sorted(((m.name, m.preload_at) for m in models if m.preload_at is not None),
                      key=lambda p: p[1])
    return StatusView(at=now, minutes=minutes, first_minute=first,
                      instances=[instance_status(cp, rt) for rt in fleet.order],
                      models=models, next_preloads=preloads, rollouts=[])


def replica_overviews(cp: ControlPlane, name: str) -> list[ReplicaOverview]:
    found = []
    for rt, manager in cp.fleet.managers():
        s = manager.status(name)
        unhealthy = rt.unhealthy.get(name)
        found.append(ReplicaOverview(
            instance=rt.name, state=s.state, level=level_of(cp, s).value,
            routable=rt.routable and s.state is ModelState.READY and unhealthy is None,
            unhealthy=unhealthy))
    return found


def instance_status(cp: ControlPlane, rt: InstanceRuntime) -> InstanceStatus:
    sup, inst = rt.supervisor, rt.instance
    snap = sup.snapshot() if sup is not None else {}
    statuses = rt.manager.statuses() if rt.manager is not None else []
    resident = [s for s in statuses if s.state in HOLDING]
    return InstanceStatus(
        name=rt.name,
        triton=str(snap.get("state", "starting")), triton_reason=snap.get("reason"),
        restarts_in_window=int(snap.get("restarts_in_window", 0)),
        grpc_url=inst.grpc_url if inst is not None else None,
        metrics_url=inst.metrics.url if inst is not None and inst.metrics else None,
        memory=memory_levels(cp, statuses, rt), provider=rt.spec.provider,
        routable=rt.routable, draining=rt.draining, outstanding=rt.outstanding,
        memory_budget_mb=rt.budget_mb(),
        memory_used_mb=round(sum(memory_mb(cp, s) or 0.0 for s in resident), 1),
        models={s.name: s.state.value for s in resident},
        planned=list(cp.fleet.plan.on(rt.name)), unhealthy=dict(rt.unhealthy))
