"""What the admin API, the CLI and the status page show of the fleet's instances."""

from __future__ import annotations

from typing import Any

from controlplane.fleet.fleet import Fleet


def describe(fleet: Fleet) -> list[dict[str, Any]]:
    """One JSON-ready entry per instance: state, routing, budget and use (MiB), resident and
    planned models."""
    views = []
    for rt in fleet.order:
        sup = rt.supervisor
        resident = fleet.resident_on(rt) if rt.manager is not None else []
        views.append({
            "name": rt.name, "provider": rt.spec.provider,
            "url": rt.instance.grpc_url if rt.instance else None,
            "state": sup.state.value if sup is not None else "starting",
            "reason": sup.down_reason() if sup is not None else None,
            "routable": rt.routable, "draining": rt.draining,
            "outstanding": rt.outstanding,
            "memory_budget_mb": rt.budget_mb(),
            "memory_used_mb": round(sum(fleet.memory_mb(s.name) for s in resident), 1),
            "cuda_visible_devices": rt.spec.cuda_visible_devices,
            "models": {s.name: s.state.value for s in resident},
            "planned": list(fleet.plan.on(rt.name)),
        })
    return views
