"""/healthz and /readyz."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controlplane.admin.deps import ControlPlaneDep
from controlplane.admin.schemas import Health
from controlplane.errors import ControlPlaneError

if TYPE_CHECKING:
    from controlplane.app import ControlPlane

router = APIRouter(tags=["health"])


async def _triton_state(cp: ControlPlane) -> str:
    if cp.instance is None:
        return "starting"
    try:
        return "live" if await cp.instance.client.is_live() else "not live"
    except ControlPlaneError as exc:
        return f"unreachable: {exc}"


@router.get("/healthz", response_model=Health)
async def healthz(cp: ControlPlaneDep) -> JSONResponse:
    """Liveness: the control plane answers and its Triton is live."""
    triton = await _triton_state(cp)
    ok = triton == "live"
    body = Health(status="ok" if ok else "unhealthy", triton=triton)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/readyz", response_model=Health)
async def readyz(cp: ControlPlaneDep) -> JSONResponse:
    """Readiness: Triton live and every pinned model loaded."""
    triton = await _triton_state(cp)
    r = cp.readiness
    ready = triton == "live" and r.ready
    pending = [] if cp.manager is None or r.pinned_done else cp.manager.pinned
    detail = {"pinned_failures": r.pinned_failures, "pinned_pending": pending,
              "gateway": cp.gateway_url}
    body = Health(status="ready" if ready else "not ready", triton=triton, detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
