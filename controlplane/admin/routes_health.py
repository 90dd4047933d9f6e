"""/healthz and /readyz: answered from state kept by the supervisor and the loops, never by
asking Triton (a hung Triton must not make health checks hang).

What a Kubernetes probe sees (README, "Health"):

- ``/healthz`` (livenessProbe): 200 while the control plane works, including while it is
  restarting a dead Triton or waiting for a hung one (restarting warmctl would not help);
  503 only when it cannot recover by itself: Triton's restarts are exhausted or off, a
  background loop died, or it is stopping. The body says which loops fail and why.
- ``/readyz`` (readinessProbe): 200 only while Triton serves and every pinned model is ready.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controlplane.admin.deps import ControlPlaneDep
from controlplane.admin.schemas import Health
from controlplane.triton.supervisor import TritonState

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz(cp: ControlPlaneDep) -> JSONResponse:
    """Liveness: 200 ``ok`` or ``degraded`` (Triton down or being restarted, a loop's last
    run failed), 503 ``unhealthy`` when warmctl cannot recover by itself."""
    supervisor = cp.supervisor
    loops = cp.loops.snapshot()
    if supervisor is None:
        body = Health(status="starting", triton="starting", detail={"loops": loops})
        return JSONResponse(body.model_dump(), status_code=503)
    dead = cp.loops.dead()
    unhealthy = supervisor.state in (TritonState.FAILED, TritonState.STOPPED) or bool(dead)
    failing = [name for name, loop in loops.items() if loop["failing"]]
    status = "unhealthy" if unhealthy else "ok" if supervisor.serving and not failing \
        else "degraded"
    detail = {"triton": supervisor.snapshot(), "loops": loops, "failing_loops": failing,
              "dead_loops": dead}
    body = Health(status=status, triton=supervisor.state.value, detail=detail)
    return JSONResponse(body.model_dump(), status_code=503 if unhealthy else 200)


@router.get("/readyz", response_model=Health)
async def readyz(cp: ControlPlaneDep) -> JSONResponse:
    """Readiness: Triton serving and every pinned model ready; ``detail.problems`` says why
    not."""
    r = cp.readiness
    ready = r.ready
    supervisor = cp.supervisor
    triton = "starting" if supervisor is None else supervisor.state.value
    detail = {**r.detail(), "gateway": cp.gateway_url}
    if supervisor is not None:
        detail["triton"] = supervisor.snapshot()
    body = Health(status="ready" if ready else "not ready", triton=triton, detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
