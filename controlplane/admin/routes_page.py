"""The status page (``GET /``) and the overview it shows (``GET /status``).

The page is a static shell (``static/``: HTML, CSS, JS, nothing from a CDN) that fetches
``/status`` every few seconds; ``/status`` is the same view model the gauges of ``/metrics``
are read from (``observability/status.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from controlplane.admin.deps import ControlPlaneDep
from controlplane.observability.status import StatusView, build_status

STATIC = Path(__file__).with_name("static")

router = APIRouter(tags=["status"])


@router.get("/", response_class=FileResponse, include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "status.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache"})


@router.get("/status", response_model=StatusView)
async def status(
    cp: ControlPlaneDep,
    minutes: Annotated[int, Query(ge=1, le=24 * 60,
                                  description="width of the per-minute usage")] = 180,
) -> StatusView:
    """Per instance: Triton's state and memory by level against the budgets; per model:
    state, level, replicas, last load's breakdown, requests and cold starts per minute,
    the plan's decision and why; the next preloads."""
    return await build_status(cp, minutes)
