"""Start-up: the pinned models, each on ``fleet.pinned_replicas`` instances."""

from __future__ import annotations

import asyncio

from controlplane.errors import ControlPlaneError
from controlplane.fleet.fleet import Fleet
from controlplane.types import ModelName


async def warm_pinned(fleet: Fleet) -> dict[ModelName, str]:
    """Each pinned model, highest priority first, on ``pinned_replicas`` instances (fewer
    when fewer accept loads; one for a stateful model). Returns {model: error} for those
    that loaded nowhere."""
    failures: dict[ModelName, str] = {}
    order = fleet.order
    for model in fleet.pinned:
        usable = [rt for rt in order if rt.accepting]
        wanted = 1 if fleet.stateful(model) else max(
            1, min(fleet.options.pinned_replicas, len(usable)))
        try:
            first = fleet.choose(model)
            others = sorted((rt for rt in usable if rt is not first),
                            key=lambda rt: (-fleet.free_mb(rt), order.index(rt)))
            targets = [first, *others][:wanted]
            results = await asyncio.gather(
                *(fleet.load(model, trigger="startup", instance=rt.name) for rt in targets),
                return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if len(errors) == len(results):
                raise errors[0]
        except ControlPlaneError as exc:
            failures[model] = str(exc)
    return failures
