"""/instances: the fleet's Triton instances, draining and resuming one; /fleet/actions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controlplane.admin.deps import FleetDep
from controlplane.admin.schemas_fleet import DrainReportView, FleetActionView, InstanceView
from controlplane.errors import Conflict
from controlplane.fleet import drain
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.views import describe

router = APIRouter(prefix="/instances", tags=["instances"])
actions_router = APIRouter(prefix="/fleet", tags=["instances"])


def instance_views(fleet: Fleet) -> list[InstanceView]:
    """Every instance in the fleet's order (the first is the one the single-instance routes
    show)."""
    return [InstanceView.of(d, fleet.runtimes[d["name"]]) for d in describe(fleet)]


def instance_view(fleet: Fleet, name: str) -> InstanceView:
    """One instance; 404 (``not_found``) for a name the fleet does not have."""
    fleet.runtime(name)
    return next(v for v in instance_views(fleet) if v.name == name)


@router.get("", response_model=list[InstanceView])
async def list_instances(fleet: FleetDep) -> list[InstanceView]:
    """Name, provider, address, supervisor state, draining, requests in flight, budget and
    memory used, resident and planned models, per instance."""
    return instance_views(fleet)


@router.get("/{name}", response_model=InstanceView)
async def get_instance(name: str, fleet: FleetDep) -> InstanceView:
    return instance_view(fleet, name)


@router.post("/{name}/drain", response_model=DrainReportView)
async def drain_instance(
    name: str, fleet: FleetDep,
    force: Annotated[bool, Query(description="drain even the last instance that serves "
                                             "(its models then serve nowhere)")] = False,
) -> DrainReportView:
    """No new requests or loads go to the instance; models needed elsewhere (pinned, or
    planned) are loaded on other instances first; requests in flight finish (up to
    ``fleet.drain_timeout_s``); then its models are unloaded and it idles until
    ``/resume``. 409 when it is the last instance serving (unless ``force``)."""
    rt = fleet.runtime(name)
    others = [o for o in fleet.order if o is not rt and o.routable]
    if rt.routable and not others and not force:
        raise Conflict(f"instance '{name}' is the last one serving: draining it would leave "
                       "every model unserved (force=true to drain anyway)")
    report = await drain.drain(fleet, name)
    return DrainReportView.of(report, instance_view(fleet, name))


@router.post("/{name}/resume", response_model=InstanceView)
async def resume_instance(name: str, fleet: FleetDep) -> InstanceView:
    """End a drain: the instance takes requests and replicas again (its models come back as
    the plan and the traffic ask for them)."""
    drain.resume(fleet, name)
    return instance_view(fleet, name)


@actions_router.get("/actions", response_model=list[FleetActionView])
async def fleet_actions(
    fleet: FleetDep, limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[FleetActionView]:
    """What the fleet did on its own (replicas added and removed, failovers, drains),
    newest first."""
    return [FleetActionView.of(a) for a in list(fleet.actions)[::-1][:limit]]


@actions_router.get("/shared-memory")
async def shared_memory_regions(fleet: FleetDep) -> list[dict[str, Any]]:
    """The shared-memory regions clients registered through the gateway, each with the
    instances it is registered on now (a restarted instance gets them again before it takes
    traffic)."""
    return fleet.shared_memory.regions()
