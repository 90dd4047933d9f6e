"""What the admin API, the CLI and the status page show of the fleet's instances."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime


def describe(fleet: Fleet, joining: Iterable[InstanceRuntime] = ()) -> list[dict[str, Any]]:
    """One JSON-ready entry per instance (those in the fleet, then ``joining`` ones being
    provisioned): its state (``states.py``) and why, its Triton's, routing, budget and use
    (MiB), resident and planned models."""
    views = []
    now = time.monotonic()
    for rt in [*fleet.order, *joining]:
        sup = rt.supervisor
        resident = fleet.resident_on(rt) if rt.manager is not None and rt.started else []
        down = sup.down_reason() if sup is not None else None
        views.append({
            "name": rt.name, "provider": rt.spec.provider, "origin": rt.origin,
            "url": rt.instance.grpc_url if rt.instance else rt.spec.url,
            "state": rt.state.value,
            "state_reason": down or rt.phase_reason,
            "state_for_s": round(now - rt.phase_since, 1),
            "triton_state": sup.state.value if sup is not None else "starting",
            "reason": down,
            "routable": rt.routable, "draining": rt.draining,
            "outstanding": rt.outstanding,
            "memory_budget_mb": rt.budget_mb(),
            "memory_used_mb": round(sum(fleet.memory_mb(s.name) for s in resident), 1),
            "cuda_visible_devices": rt.spec.cuda_visible_devices,
            "models": {s.name: s.state.value for s in resident},
            "planned": list(fleet.plan.on(rt.name)),
            "unhealthy": dict(rt.unhealthy),
        })
    return views
