"""/scaling: what the autoscaler decided and why, and the traffic ramps under way."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from controlplane.admin.deps import ControlPlaneDep

router = APIRouter(prefix="/scaling", tags=["instances"])


@router.get("")
async def scaling(cp: ControlPlaneDep) -> dict[str, Any]:
    """``enabled``; instances by state; ``min_instances``, ``max_instances``,
    ``standby_target``; ``warm_up_s`` (measured start-to-warm, p90; null before the first
    join) and ``lead_s`` (how far ahead of the forecast it scales); ``last``: the latest
    decision; ``decisions``: those that acted, newest first (``at`` ISO-8601, ``action``
    scale_out | scale_in | promote_standby, ``count``, ``target_instances``,
    ``standby_wanted``, ``reasons``, ``instances`` acted on, ``outcome``); ``ramps``: each
    new replica's weight (0..1) on its way to a full share, its error rate and p50 against
    its peers'."""
    view = cp.autoscaler.view()
    view["ramps"] = [dataclasses.asdict(r) for r in cp.ramp.views()]
    return view
