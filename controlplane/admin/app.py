"""Builds the FastAPI application around a running ControlPlane."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from controlplane import __version__
from controlplane.admin import (
    routes_health,
    routes_instances,
    routes_models,
    routes_plan,
    routes_rollouts,
    routes_scaling,
    routes_traffic,
    routes_triton,
    routes_warmup,
)
from controlplane.admin.errors import install_error_handlers
from controlplane.admin.extras import install_extras

if TYPE_CHECKING:
    from controlplane.app import ControlPlane


def create_admin_app(cp: ControlPlane) -> FastAPI:
    app = FastAPI(title="warmctl admin API", version=__version__)
    app.state.control_plane = cp
    install_error_handlers(app)
    install_extras(app, cp)  # auth first: it guards the routes included after it
    app.include_router(routes_health.router)
    app.include_router(routes_models.router)
    app.include_router(routes_traffic.router)
    app.include_router(routes_warmup.router)
    app.include_router(routes_plan.router)
    app.include_router(routes_triton.router)
    app.include_router(routes_instances.router)
    app.include_router(routes_instances.actions_router)
    app.include_router(routes_scaling.router)
    app.include_router(routes_rollouts.router)
    return app
