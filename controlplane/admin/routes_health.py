"""/healthz and /readyz: answered from state kept by the supervisors and the loops, never by
asking Triton (a hung Triton must not make health checks hang).

What a Kubernetes probe sees (README, "Health"):

- ``/healthz`` (livenessProbe): 200 while the control plane works, including while it is
  restarting a dead Triton or waiting for a hung one (restarting warmctl would not help);
  503 only when it cannot recover by itself: every instance's Triton has exhausted its
  restarts (or has them off), a background loop died, or it is stopping. With several
  instances, one that cannot recover makes the answer ``degraded`` while another serves.
  ``degraded`` (200) too while a loop's last pass failed or the store is unwritable or
  stalled (writes are queued meanwhile; restarting would lose them). The body says which
  loops fail and why, each instance's state (``detail.instances``) and the store's
  (``detail.store``).
- ``/readyz`` (readinessProbe): 200 only while some instance serves and every pinned model is
  ready on one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controlplane.admin.deps import ControlPlaneDep
from controlplane.admin.schemas import Health
from controlplane.triton.supervisor import TritonState

if TYPE_CHECKING:
    from controlplane.app import ControlPlane

router = APIRouter(tags=["health"])

#: states a supervisor does not leave by itself
GIVEN_UP = frozenset({TritonState.FAILED, TritonState.STOPPED})


def liveness(states: Sequence[TritonState], failing_loops: bool, dead_loops: bool,
             store_ok: bool = True) -> str:
    """``unhealthy`` when no instance can recover by itself (or a loop died), ``ok`` when
    every instance serves, no loop fails and the store takes writes, else ``degraded``."""
    if dead_loops or not states or all(s in GIVEN_UP for s in states):
        return "unhealthy"
    if failing_loops or not store_ok or any(s is not TritonState.LIVE for s in states):
        return "degraded"
    return "ok"


def fleet_triton_state(states: Sequence[TritonState]) -> str:
    """The one ``triton`` word of a health answer: the only instance's state; with several,
    ``live`` while any serves, else the first instance's state."""
    if len(states) > 1 and TritonState.LIVE in states:
        return TritonState.LIVE.value
    return states[0].value


def instance_details(cp: ControlPlane) -> dict[str, dict[str, Any]]:
    """Every instance's supervisor snapshot, with its draining flag; ``{"state": "starting"}``
    for one not started yet."""
    found: dict[str, dict[str, Any]] = {}
    for rt in cp.fleet.order:
        snap = rt.supervisor.snapshot() if rt.supervisor is not None else {"state": "starting"}
        found[rt.name] = {**snap, "draining": rt.draining, "routable": rt.routable}
    return found


@router.get("/healthz", response_model=Health)
async def healthz(cp: ControlPlaneDep) -> JSONResponse:
    """Liveness: 200 ``ok`` or ``degraded`` (an instance down or being restarted, a loop's
    last run failed, the store unwritable or stalled), 503 ``unhealthy`` when warmctl
    cannot recover by itself."""
    supervisors = [rt.supervisor for rt in cp.fleet.order]
    loops = cp.loops.snapshot()
    if cp.supervisor is None or any(s is None for s in supervisors):
        body = Health(status="starting", triton="starting", detail={"loops": loops})
        return JSONResponse(body.model_dump(), status_code=503)
    states = [s.state for s in supervisors if s is not None]
    dead = cp.loops.dead()
    failing = [name for name, loop in loops.items() if loop["failing"]]
    store = cp.store_health.snapshot()
    status = liveness(states, bool(failing), bool(dead), store["state"] == "ok")
    detail = {"triton": cp.supervisor.snapshot(), "instances": instance_details(cp),
              "loops": loops, "failing_loops": failing, "dead_loops": dead, "store": store}
    if cp.cluster is not None:  # which replica this is, and which one leads
        detail["cluster"] = cp.cluster.leadership.view()
    if cp.workers is not None:
        # a worker being replaced: the others keep the ports, so degraded, not unhealthy
        detail["gateway_workers"] = workers = cp.workers.status()
        if status == "ok" and workers["alive"] < workers["configured"]:
            status = "degraded"
    body = Health(status=status, triton=fleet_triton_state(states), detail=detail)
    return JSONResponse(body.model_dump(), status_code=503 if status == "unhealthy" else 200)


@router.get("/readyz", response_model=Health)
async def readyz(cp: ControlPlaneDep) -> JSONResponse:
    """Readiness: some instance serving and every pinned model ready; ``detail.problems``
    says why not."""
    r = cp.readiness
    ready = r.ready
    supervisors = [rt.supervisor for rt in cp.fleet.order]
    states = [s.state for s in supervisors if s is not None]
    triton = "starting" if cp.supervisor is None or len(states) < len(supervisors) \
        else fleet_triton_state(states)
    detail = {**r.detail(), "gateway": cp.gateway_url}
    if cp.supervisor is not None:
        detail["triton"] = cp.supervisor.snapshot()
    detail["instances"] = instance_details(cp)
    body = Health(status="ready" if ready else "not ready", triton=triton, detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
