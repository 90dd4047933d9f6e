"""/instances: the fleet's Triton instances, draining and resuming one; /fleet/actions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query

from controlplane.admin.deps import ControlPlaneDep, FleetDep
from controlplane.admin.schemas_fleet import (
    AddInstance,
    DrainReportView,
    FleetActionView,
    InstanceView,
)
from controlplane.errors import Conflict, ControlPlaneError, ErrorCode
from controlplane.fleet import drain
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.views import describe

router = APIRouter(prefix="/instances", tags=["instances"])
actions_router = APIRouter(prefix="/fleet", tags=["instances"])


def instance_views(fleet: Fleet, joining: Iterable[InstanceRuntime] = ()
                   ) -> list[InstanceView]:
    """Every instance in the fleet's order (the first is the one the single-instance routes
    show), then those being provisioned."""
    found = {**{rt.name: rt for rt in joining}, **fleet.runtimes}
    return [InstanceView.of(d, found[d["name"]]) for d in describe(fleet, joining)]


def instance_view(fleet: Fleet, name: str, joining: Iterable[InstanceRuntime] = ()
                  ) -> InstanceView:
    """One instance; 404 (``not_found``) for a name the fleet does not have."""
    view = next((v for v in instance_views(fleet, joining) if v.name == name), None)
    if view is None:
        fleet.runtime(name)  # raises InstanceNotFound
        raise AssertionError("unreachable")
    return view


@router.get("", response_model=list[InstanceView])
async def list_instances(fleet: FleetDep, cp: ControlPlaneDep) -> list[InstanceView]:
    """Name, provider, state (``provisioning`` .. ``retired``), its Triton's, requests in
    flight, budget and memory used, resident and planned models, per instance."""
    return instance_views(fleet, cp.membership.joining.values())


@router.post("", response_model=InstanceView, status_code=202)
async def add_instance(body: AddInstance, fleet: FleetDep, cp: ControlPlaneDep
                       ) -> InstanceView:
    """Add an instance while warmctl runs: ``{"name": "b", "provider": "embedded"}`` or
    ``{"name": "b", "provider": "static", "url": "host:port"}``, plus any key of
    ``[instances.<name>]``. 202: it is ``provisioning``; it warms the models planned for it,
    then serves (``"standby": true``: stays warm outside routing until promoted). Stored:
    it comes back after a restart. 400 for bad keys, 409 for a name in use."""
    m = cp.membership
    raw = body.model_dump(exclude={"name", "standby"}, exclude_unset=True)
    rt = await m.add(body.name, m.spec_of({**raw, **(body.model_extra or {})}),
                     origin="operator", standby=body.standby)
    return instance_view(fleet, rt.name, m.joining.values())


@router.get("/{name}", response_model=InstanceView)
async def get_instance(name: str, fleet: FleetDep, cp: ControlPlaneDep) -> InstanceView:
    """One instance; a retired one answers 404 naming why it left."""
    m = cp.membership
    if name not in fleet.runtimes and name not in m.joining:
        gone = next((r for r in reversed(fleet.retired) if r[0] == name), None)
        if gone is not None:
            raise ControlPlaneError(f"instance '{name}' is retired: {gone[1]}",
                                    code=ErrorCode.NOT_FOUND)
    return instance_view(fleet, name, m.joining.values())


@router.delete("/{name}", response_model=InstanceView, status_code=202)
async def remove_instance(
    name: str, fleet: FleetDep, cp: ControlPlaneDep,
    force: Annotated[bool, Query(description="remove even the last instance that serves")]
    = False,
) -> InstanceView:
    """Drain the instance without losing a request (its models made ready elsewhere first,
    requests in flight and open sequences finished), then retire it: closed, and forgotten
    by the store. 202: it is ``draining``. 409 for the last serving instance."""
    m = cp.membership
    m.get(name)
    view = instance_view(fleet, name, m.joining.values())
    m.remove(name, "removed by the operator", force=force)
    return view


@router.post("/{name}/promote", response_model=InstanceView)
async def promote_instance(name: str, fleet: FleetDep, cp: ControlPlaneDep) -> InstanceView:
    """A standby instance takes traffic now. 409 unless it is ``standby``."""
    cp.membership.promote(name, "promoted by the operator")
    await fleet.publish()
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
