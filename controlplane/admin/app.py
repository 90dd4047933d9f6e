"""Builds the FastAPI application around a running ControlPlane."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

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
from controlplane.cluster.role import ClusterRole

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
    if cp.cluster is not None:
        _guard_writes_on_followers(app, cp.cluster)
    return app


def _guard_writes_on_followers(app: FastAPI, cluster: ClusterRole) -> None:
    """On a follower replica, every write (not GET, HEAD or OPTIONS) is answered 503 with
    where the leader is: only the leader decides (``cluster/role.py``)."""

    @app.middleware("http")
    async def followers_do_not_write(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method in ("GET", "HEAD", "OPTIONS") or cluster.leadership.is_leader:
            return await call_next(request)
        headers = {}
        if cluster.leadership.leader_address:
            headers["x-warmctl-leader"] = cluster.leadership.leader_address
        return JSONResponse({"error": {"code": "unavailable",
                                       "message": cluster.follower.not_leader()}},
                            status_code=503, headers=headers)
