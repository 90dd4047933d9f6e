"""/models/{name}/usage and /models/{name}/shapes: what the gateway recorded."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from controlplane.admin.deps import Manager, Traffic
from controlplane.admin.schemas import ShapeView, UsagePoint, UsageSeries

router = APIRouter(prefix="/models", tags=["traffic"])


@router.get("/{name}/usage", response_model=UsageSeries)
async def usage(
    name: str, manager: Manager, traffic: Traffic,
    minutes: Annotated[int, Query(gt=0, le=60 * 24 * 35)] = 60,
) -> UsageSeries:
    """Per-minute requests, errors, cold starts and latency over the last ``minutes``."""
    manager.state(name)  # 404 for an unknown model
    until = time.time()
    rows = await traffic.db.call(traffic.usage, name, until - minutes * 60, until)
    points = [UsagePoint.of(r) for r in rows]
    return UsageSeries(model=name, minutes=minutes, points=points,
                       requests=sum(p.requests for p in points),
                       cold_starts=sum(p.cold_starts for p in points))


@router.get("/{name}/shapes", response_model=list[ShapeView])
async def shapes(name: str, manager: Manager, traffic: Traffic) -> list[ShapeView]:
    """The shape histogram: each input-shape signature with its count, most frequent first."""
    manager.state(name)
    rows = await traffic.db.call(traffic.shapes, name)
    total = sum(r.count for r in rows) or 1
    return [ShapeView.of(r, total) for r in rows]
