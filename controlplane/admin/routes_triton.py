"""/triton: the supervised Triton's state, and an operator's restart of the embedded one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controlplane.admin.deps import ControlPlaneDep
from controlplane.errors import TritonUnavailable
from controlplane.triton.supervisor import TritonSupervisor

router = APIRouter(prefix="/triton", tags=["triton"])


def _supervisor(cp: Any) -> TritonSupervisor:
    supervisor: TritonSupervisor | None = cp.supervisor
    if supervisor is None:
        raise TritonUnavailable("control plane is starting")
    return supervisor


def _view(cp: Any, supervisor: TritonSupervisor) -> dict[str, Any]:
    restored = {} if cp.manager is None else dict(cp.manager.recovery.last_restore)
    url = cp.instance.grpc_url if cp.instance is not None else None
    # Triton's own Prometheus endpoint (fixed by triton.metrics_port, else picked at start)
    metrics = cp.instance.metrics if cp.instance is not None else None
    return {**supervisor.snapshot(), "grpc_url": url,
            "metrics_url": metrics.url if metrics is not None else None,
            "last_restore": restored}


@router.get("")
async def triton_state(cp: ControlPlaneDep) -> dict[str, Any]:
    """State (live, unresponsive, down, restarting, failed), why, restarts, last exit, and
    what the last restore did per model."""
    return _view(cp, _supervisor(cp))


@router.post("/restart")
async def restart_triton(
    cp: ControlPlaneDep,
    wait: Annotated[bool, Query(description="also wait until its models are restored")] = True,
) -> dict[str, Any]:
    """Restart the embedded tritonserver (a hung model load, a leak, after it gave up):
    models it had are restored, pinned first. 409 for an external Triton; 503 when it does
    not come up."""
    supervisor = _supervisor(cp)
    await supervisor.restart()
    if wait:
        await supervisor.wait_restored()
    return _view(cp, supervisor)
