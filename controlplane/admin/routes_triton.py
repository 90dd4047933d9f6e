"""/triton: a supervised Triton's state, and an operator's restart of an embedded one
(``?instance=``; the first instance by default, as before there were fleets)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controlplane.admin.deps import ControlPlaneDep
from controlplane.errors import TritonUnavailable
from controlplane.fleet import drain
from controlplane.fleet.runtime import InstanceRuntime

router = APIRouter(prefix="/triton", tags=["triton"])

InstanceQuery = Annotated[str | None, Query(
    max_length=63, description="which Triton instance (default: the first)")]


def _runtime(cp: Any, name: str | None) -> InstanceRuntime:
    """The named instance (404 for an unknown one), else the first; 503 while starting."""
    rt: InstanceRuntime = cp.fleet.order[0] if name is None else cp.fleet.runtime(name)
    if rt.supervisor is None:
        raise TritonUnavailable("control plane is starting")
    return rt


def _view(rt: InstanceRuntime) -> dict[str, Any]:
    assert rt.supervisor is not None
    restored = {} if rt.manager is None else dict(rt.manager.recovery.last_restore)
    inst = rt.instance
    # Triton's own Prometheus endpoint (fixed by triton.metrics_port, else picked at start)
    metrics = inst.metrics if inst is not None else None
    return {**rt.supervisor.snapshot(), "instance": rt.name,
            "grpc_url": inst.grpc_url if inst is not None else None,
            "metrics_url": metrics.url if metrics is not None else None,
            "draining": rt.draining, "last_restore": restored}


@router.get("")
async def triton_state(cp: ControlPlaneDep, instance: InstanceQuery = None) -> dict[str, Any]:
    """State (live, unresponsive, down, restarting, failed), why, restarts, last exit, and
    what the last restore did per model, of one instance (``GET /instances`` lists all)."""
    return _view(_runtime(cp, instance))


@router.post("/restart")
async def restart_triton(
    cp: ControlPlaneDep,
    wait: Annotated[bool, Query(description="also wait until its models are restored")] = True,
    instance: InstanceQuery = None,
) -> dict[str, Any]:
    """Restart one embedded tritonserver (a hung model load, a leak, after it gave up):
    models it had are restored, pinned first. With several instances its traffic moves
    first, as for a drain (its models made ready elsewhere, in-flight requests finished),
    so no request fails or waits. 409 for an external Triton; 503 when it does not come
    up."""
    rt = _runtime(cp, instance)
    assert rt.supervisor is not None
    # with other instances serving, its traffic moves first: no request fails or waits
    await drain.restart(cp.fleet, rt.name)
    if wait:
        await rt.supervisor.wait_restored()
    return _view(rt)
