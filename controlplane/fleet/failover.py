"""When an instance stops serving: its models moved to the others.

Failover: the moment an instance's supervisor says its Triton is down or hung, the router
stops picking it (it is not ``routable``), so traffic for models with another ready replica
moves at once. Models that were ready there and have no other replica are loaded elsewhere,
hottest first (forecast rate), two at a time so the first ones are not slowed by the rest;
each instance's budget is kept by ``placement.ReplicaPlacer.make_room``. The dead instance is
restarted by its supervisor (embedded) or waited for (static); once back, its lifecycle
restores what it had and the next replica plan trims what is now surplus.

Draining, the operator's way to take an instance out, is ``drain.py``'s.
"""

from __future__ import annotations

import asyncio
import logging

from controlplane.errors import ControlPlaneError
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.lifecycle.states import ModelState
from controlplane.types import ModelName

log = logging.getLogger(__name__)

#: failover loads started at once: the hottest models are not slowed by the whole list
FAILOVER_CONCURRENCY = 2


class Failover:
    """A supervisor listener of one instance (after its manager, which marks models cold)."""

    def __init__(self, fleet: Fleet, rt: InstanceRuntime,
                 concurrency: int = FAILOVER_CONCURRENCY) -> None:
        self.fleet = fleet
        self.rt = rt
        self.concurrency = concurrency
        self.task: asyncio.Task[dict[ModelName, str]] | None = None

    async def triton_down(self, reason: str) -> None:
        # Triton's sequences and shared-memory registrations went with it
        self.fleet.sequences.forget(self.rt.name)
        self.fleet.shared_memory.forget(self.rt.name)
        if not self.fleet.options.failover or len(self.fleet.order) < 2 \
                or not self.fleet.leads():  # a follower: the leader fails over, once
            return
        assert self.rt.manager is not None
        lost = set(self.rt.manager.recovery.wanted)
        if lost and (self.task is None or self.task.done()):
            self.task = asyncio.create_task(self.cover(lost, reason),
                                            name=f"failover-{self.rt.name}")

    async def triton_up(self) -> None:
        return None

    async def cover(self, models: set[ModelName], reason: str) -> dict[ModelName, str]:
        """Load elsewhere each of ``models`` that has no ready replica left; returns
        {model: instance it went to, or the error}."""
        fleet = self.fleet
        uncovered = sorted((m for m in models if not fleet.ready_now(m)),
                           key=lambda m: (m not in fleet.pinned, -fleet.rates.get(m, 0.0), m))
        gate = asyncio.Semaphore(self.concurrency)
        why = f"{self.rt.name} stopped serving: {reason}"[:300]

        async def one(model: ModelName) -> tuple[ModelName, str]:
            async with gate:
                try:
                    status = await fleet.load(model, trigger="failover")
                    where = ",".join(s.instance for s in fleet.replicas(model)
                                     if s.state is ModelState.READY)
                    fleet.record("failover", model, where or status.instance, why, "ok")
                    return model, where
                except ControlPlaneError as exc:
                    fleet.record("failover", model, self.rt.name, why, f"failed: {exc}")
                    return model, f"failed: {exc}"

        results = await asyncio.gather(*(one(m) for m in uncovered))
        return dict(results)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
