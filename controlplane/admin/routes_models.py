"""/models: states, loads and unloads, through the fleet.

A model's fields are its best replica's (the fleet's aggregate, as the gateway sees it);
``replicas`` shows it on every instance. Loads and unloads act fleet-wide unless
``?instance=`` names one instance.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query

from controlplane.admin.deps import ControlPlaneDep, FleetDep
from controlplane.admin.schemas import ModelDetail, ModelView
from controlplane.admin.schemas_fleet import ReplicaView
from controlplane.errors import ConfigError
from controlplane.fleet.fleet import Fleet
from controlplane.lifecycle.states import ModelStatus
from controlplane.store.models import LoadEvent
from controlplane.triton.repository import ModelSpec

if TYPE_CHECKING:
    from controlplane.app import ControlPlane

router = APIRouter(prefix="/models", tags=["models"])

InstanceQuery = Annotated[str | None, Query(
    max_length=63, description="only this Triton instance (default: the fleet decides)")]


def replica_views(fleet: Fleet, name: str) -> list[ReplicaView]:
    """The model on each instance; raises ModelNotFound."""
    return [ReplicaView.of(s, fleet.runtimes.get(s.instance)) for s in fleet.replicas(name)]


def model_view(cp: ControlPlane, status: ModelStatus) -> ModelView:
    view = ModelView.of(status, replica_views(cp.fleet, status.name))
    return view.model_copy(update=_versions(cp, status.name))


def _versions(cp: ControlPlane, name: str) -> dict[str, str | None]:
    return {"active_version": cp.versions.active(name),
            "target_version": cp.versions.target(name)}


@router.get("", response_model=list[ModelView])
async def list_models(fleet: FleetDep, cp: ControlPlaneDep) -> list[ModelView]:
    return [model_view(cp, s) for s in fleet.statuses()]


@router.get("/{name}", response_model=ModelDetail)
async def get_model(name: str, fleet: FleetDep, cp: ControlPlaneDep) -> ModelDetail:
    """The model's config, its replicas and its last 20 loads and unloads on any instance,
    newest first."""
    status = fleet.status(name)
    replicas = replica_views(fleet, name)
    try:
        spec: ModelSpec | str = fleet.repository.spec(name)
    except ConfigError as exc:
        spec = str(exc)
    events: list[LoadEvent] = []
    where: dict[int, str] = {}
    for rt, manager in fleet.managers():
        found = await manager.store.db.call(manager.store.events, name, limit=20)
        events += found
        where.update({e.id: rt.name for e in found})
    events.sort(key=lambda e: (e.started_at, e.id), reverse=True)
    cache = cp.compile_cache.entries(name) if cp.compile_cache else []
    detail = ModelDetail.build(status, spec, events[:20], cache, replicas, where)
    return detail.model_copy(update=_versions(cp, name))


@router.post("/{name}/load", response_model=ModelView)
async def load_model(name: str, fleet: FleetDep, cp: ControlPlaneDep,
                     instance: InstanceQuery = None) -> ModelView:
    """Load now: ends an operator hold and skips a failed model's back-off. Without
    ``instance``: ready on one instance (the plan's or the freest) unless it is ready on one
    already; with it: on that instance (404 for an unknown one). The answer's own fields are
    the fleet's (its best replica's, maybe on another instance); the loaded replica's state
    and ``load_s`` are its entry in ``replicas``. A version folder newer than the one served
    starts its rollout now (``rollouts.auto``), as plain Triton's load would switch to it:
    ``GET /models/{name}/rollouts`` follows it."""
    await fleet.load(name, trigger="api", instance=instance)
    await cp.rollouts.detect(name)
    return model_view(cp, fleet.status(name))


@router.post("/{name}/unload", response_model=ModelView)
async def unload_model(
    name: str, fleet: FleetDep, cp: ControlPlaneDep,
    force: Annotated[bool, Query(description="unload even a pinned model")] = False,
    instance: InstanceQuery = None,
) -> ModelView:
    """Unload and hold cold: lazy loads and the scheduler leave the model alone until an
    operator loads it or releases the hold (``/release``). Without ``instance``: from every
    instance."""
    await fleet.unload(name, trigger="api", instance=instance, force=force)
    return model_view(cp, fleet.status(name))


@router.post("/{name}/release", response_model=ModelView)
async def release_model(name: str, fleet: FleetDep, cp: ControlPlaneDep) -> ModelView:
    """End the operator's hold on a model unloaded through the API, and its failure back-off,
    on every instance: lazy loads and the scheduler may load it again. The model is not
    loaded by this call."""
    fleet.status(name)  # 404 before any instance changes
    for _, manager in fleet.managers():
        manager.release(name)
    return model_view(cp, fleet.status(name))


@router.delete("/{name}/compile-cache")
async def forget_compile_cache(name: str, fleet: FleetDep, cp: ControlPlaneDep) -> dict[str, int]:
    """Drop the model's torch.compile cache entries: its next load compiles afresh (a loaded
    instance keeps serving). ``{"removed": <entries>}``; 404 for an unknown model."""
    fleet.status(name)
    removed = await asyncio.to_thread(cp.compile_cache.forget, name) if cp.compile_cache else 0
    return {"removed": removed}
