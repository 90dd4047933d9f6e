"""``GET /metrics``: Prometheus exposition of warmctl's own figures (read token)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from controlplane.errors import ControlPlaneError, ErrorCode
from controlplane.observability.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["observability"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format 0.0.4"}})
async def metrics(request: Request) -> Response:
    """Counters and gauges, ``warmctl_`` prefix, every family labelled by ``instance``.
    404 when ``admin.metrics`` is off. Triton's own metrics: ``warmctl_triton_info``'s
    ``metrics_url``."""
    found: Metrics | None = getattr(request.app.state, "metrics", None)
    if found is None:
        raise ControlPlaneError("metrics are disabled (admin.metrics = false)",
                                code=ErrorCode.NOT_FOUND)
    return Response(await found.render(), media_type=CONTENT_TYPE)
