"""Builds the FastAPI application around a running ControlPlane."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from controlplane import __version__
from controlplane.admin.errors import install_error_handlers
from controlplane.admin.schemas import Health, ModelDetail, ModelView
from controlplane.errors import ConfigError, ControlPlaneError, TritonUnavailable
from controlplane.lifecycle.manager import ModelManager
from controlplane.triton.repository import ModelSpec

if TYPE_CHECKING:
    from controlplane.app import ControlPlane


def _control_plane(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.control_plane
    return cp


def _manager(request: Request) -> ModelManager:
    manager = _control_plane(request).manager
    if manager is None:
        raise TritonUnavailable("control plane is starting")
    return manager


Manager = Annotated[ModelManager, Depends(_manager)]
ControlPlaneDep = Annotated["ControlPlane", Depends(_control_plane)]

models = APIRouter(prefix="/models", tags=["models"])


@models.get("", response_model=list[ModelView])
async def list_models(manager: Manager) -> list[ModelView]:
    return [ModelView.of(s) for s in manager.statuses()]


@models.get("/{name}", response_model=ModelDetail)
async def get_model(name: str, manager: Manager) -> ModelDetail:
    status = manager.status(name)
    try:
        spec: ModelSpec | str = manager.repository.spec(name)
    except ConfigError as exc:
        spec = str(exc)
    events = await asyncio.to_thread(manager.store.events, name, limit=20)
    return ModelDetail.build(status, spec, events)


@models.post("/{name}/load", response_model=ModelView)
async def load_model(name: str, manager: Manager) -> ModelView:
    return ModelView.of(await manager.load(name, trigger="api"))


@models.post("/{name}/unload", response_model=ModelView)
async def unload_model(
    name: str, manager: Manager,
    force: Annotated[bool, Query(description="unload even a pinned model")] = False,
) -> ModelView:
    return ModelView.of(await manager.unload(name, trigger="api", force=force))


health = APIRouter(tags=["health"])


async def _triton_state(cp: ControlPlane) -> str:
    if cp.instance is None:
        return "starting"
    try:
        return "live" if await cp.instance.client.is_live() else "not live"
    except ControlPlaneError as exc:
        return f"unreachable: {exc}"


@health.get("/healthz", response_model=Health)
async def healthz(cp: ControlPlaneDep) -> JSONResponse:
    """Liveness: the control plane answers and its Triton is live."""
    triton = await _triton_state(cp)
    ok = triton == "live"
    body = Health(status="ok" if ok else "unhealthy", triton=triton)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@health.get("/readyz", response_model=Health)
async def readyz(cp: ControlPlaneDep) -> JSONResponse:
    """Readiness: Triton live and every pinned model loaded."""
    triton = await _triton_state(cp)
    r = cp.readiness
    ready = triton == "live" and r.ready
    pending = [] if cp.manager is None or r.pinned_done else cp.manager.pinned
    detail = {"pinned_failures": r.pinned_failures, "pinned_pending": pending}
    body = Health(status="ready" if ready else "not ready", triton=triton, detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def create_admin_app(cp: ControlPlane) -> FastAPI:
    app = FastAPI(title="warmctl admin API", version=__version__)
    app.state.control_plane = cp
    install_error_handlers(app)
    app.include_router(health)
    app.include_router(models)
    return app
