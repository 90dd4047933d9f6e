"""What a joining instance loads before it takes traffic, and the loads themselves.

A serving join loads the replicas the replica plan gives it once it counts (the plan run as
if the instance accepted replicas: pinned models short of ``pinned_replicas``, models whose
forecast or measured rate asks for another replica); a standby loads what the forecast
expects next, hottest first, within its budget. Each load is a normal lifecycle load -- the
model's traffic-shaped warm-up and probes included -- with the trigger ``prewarm``, two at a
time so the hottest are ready first. A load that fails leaves the model to load on demand
elsewhere; the join goes on (the instance only gets requests for what is ready on it).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from controlplane.errors import ControlPlaneError
from controlplane.fleet.fleet import PREWARM_TRIGGER, Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.lifecycle.states import ModelState
from controlplane.types import ModelName

#: loads at once on a joining instance
PREWARM_CONCURRENCY = 2


def standby_models(fleet: Fleet, rt: InstanceRuntime) -> list[ModelName]:
    """What a standby keeps warm: pinned models, then the forecast's hottest (rate > 0),
    while they fit its budget (a model never measured counts as 0 MB)."""
    budget = rt.budget_mb()
    room = math.inf if budget is None else budget
    rates = fleet.rates
    ranked = [*fleet.pinned, *sorted((m for m, r in rates.items()
                                      if r > 0 and m not in fleet.pinned),
                                     key=lambda m: (-rates[m], m))]
    chosen: list[ModelName] = []
    for model in ranked:
        if model not in fleet.repository or model in chosen:
            continue
        need = fleet.memory_mb(model)
        if need <= room:
            chosen.append(model)
            room -= need
    return chosen


async def prewarm(fleet: Fleet, rt: InstanceRuntime, models: Sequence[ModelName]
                  ) -> dict[ModelName, str]:
    """Load ``models`` on ``rt`` (in this order of priority); returns {model: "ready" or
    the error}."""
    gate = asyncio.Semaphore(PREWARM_CONCURRENCY)

    async def one(model: ModelName) -> tuple[ModelName, str]:
        async with gate:
            try:
                status = await fleet.load(model, trigger=PREWARM_TRIGGER, instance=rt.name)
            except ControlPlaneError as exc:
                fleet.record("prewarm", model, rt.name, "instance joins", f"failed: {exc}")
                return model, f"failed: {exc}"
            ok = status.state is ModelState.READY
            return model, "ready" if ok else status.state.value

    return dict(await asyncio.gather(*(one(m) for m in dict.fromkeys(models))))
