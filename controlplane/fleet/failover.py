"""When an instance stops serving, and when the operator drains one.

Failover: the moment an instance's supervisor says its Triton is down or hung, the router
stops picking it (it is not ``routable``), so traffic for models with another ready replica
moves at once. Models that were ready there and have no other replica are loaded elsewhere,
hottest first (forecast rate), two at a time so the first ones are not slowed by the rest;
each instance's budget is kept by ``placement.ReplicaPlacer.make_room``. The dead instance is
restarted by its supervisor (embedded) or waited for (static); once back, its lifecycle
restores what it had and the next replica plan trims what is now surplus.

Drain: the instance takes no new requests or loads; models needed elsewhere (pinned, planned
by the last replica plan, or with no plan yet: all) are loaded on other instances first; the
requests in flight on it finish (up to ``fleet.drain_timeout_s``); then its models are
unloaded and it idles until resumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from controlplane.errors import ControlPlaneError, TritonUnavailable
from controlplane.fleet.fleet import RESIDENT, Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.lifecycle.states import ModelState
from controlplane.types import InstanceName, ModelName

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
        if not self.fleet.options.failover or len(self.fleet.order) < 2:
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


@dataclass
class DrainReport:
    instance: InstanceName
    #: model -> where it was loaded (instance) or why not
    moved: dict[ModelName, str] = field(default_factory=dict)
    #: requests still in flight when the wait ended (0: all finished)
    in_flight_left: int = 0
    waited_s: float = 0.0
    unloaded: list[ModelName] = field(default_factory=list)
    errors: dict[ModelName, str] = field(default_factory=dict)


async def drain(fleet: Fleet, name: InstanceName) -> DrainReport:
    """Drain instance ``name`` (see the module's docstring); idempotent."""
    rt = fleet.runtime(name)
    if rt.manager is None:
        raise TritonUnavailable(f"instance '{name}' has not started")
    others = [o for o in fleet.order if o is not rt and o.routable]
    rt.draining = True
    report = DrainReport(name)
    resident = [s.name for s in rt.manager.statuses() if s.state in RESIDENT]
    planned = fleet.plan.replicas
    needed = [m for m in resident if m in fleet.pinned or not planned or fleet.plan.instances_of(m)]
    if others:
        for model in needed:
            if fleet.ready_now(model):
                report.moved[model] = "already ready elsewhere"
                continue
            try:
                await fleet.load(model, trigger="drain")
                report.moved[model] = ",".join(s.instance for s in fleet.replicas(model)
                                               if s.state is ModelState.READY
                                               and s.instance != name)
            except ControlPlaneError as exc:
                report.moved[model] = f"failed: {exc}"
    t0 = time.monotonic()
    deadline = t0 + fleet.options.drain_timeout_s
    # outstanding is a plain counter on the hot path (no event to wait on)
    while rt.outstanding > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    report.waited_s = round(time.monotonic() - t0, 3)
    report.in_flight_left = rt.outstanding
    for model in resident:
        try:
            await rt.manager.unload(model, trigger="drain", force=True)
            report.unloaded.append(model)
        except ControlPlaneError as exc:
            report.errors[model] = str(exc)
    for model in resident:
        fleet.record("drain", model, name, f"instance {name} drained",
                     "unloaded" if model in report.unloaded else report.errors.get(model, "?"))
    return report


def resume(fleet: Fleet, name: InstanceName) -> None:
    """End a drain: the instance takes requests and replicas again."""
    fleet.runtime(name).draining = False
