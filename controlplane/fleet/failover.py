"""When an instance stops serving, and when the operator drains one.

Failover: the moment an instance's supervisor says its Triton is down or hung, the router
stops picking it (it is not ``routable``), so traffic for models with another ready replica
moves at once. Models that were ready there and have no other replica are loaded elsewhere,
hottest first (forecast rate), two at a time so the first ones are not slowed by the rest;
each instance's budget is kept by ``placement.ReplicaPlacer.make_room``. The dead instance is
restarted by its supervisor (embedded) or waited for (static); once back, its lifecycle
restores what it had and the next replica plan trims what is now surplus.

Drain: the instance takes no new loads; models needed elsewhere (pinned, planned by the last
replica plan, or with no plan yet: all) are made ready on other instances while it still
serves; then it takes no new requests, and the requests in flight on it and the open
sequences of its stateful models finish (up to ``fleet.drain_timeout_s``); then its models
are unloaded and it idles until resumed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from controlplane.errors import ControlPlaneError, TritonUnavailable
from controlplane.fleet.fleet import RESIDENT, Fleet
from controlplane.fleet.removal import wait_settled
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
        # Triton's sequences and shared-memory registrations went with it
        self.fleet.sequences.forget(self.rt.name)
        self.fleet.shared_memory.forget(self.rt.name)
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
    #: sequences of stateful models still open when the wait ended (0: all ended or idle)
    sequences_left: int = 0
    waited_s: float = 0.0
    unloaded: list[ModelName] = field(default_factory=list)
    errors: dict[ModelName, str] = field(default_factory=dict)


async def drain(fleet: Fleet, name: InstanceName) -> DrainReport:
    """Drain instance ``name`` (see the module's docstring); idempotent.

    The order is what keeps every request served: cordon (no new loads or replicas here,
    requests still come), make each needed model ready elsewhere, then stop routing here
    (open sequences still reach it), wait for in-flight requests and open sequences, unload.
    """
    rt = fleet.runtime(name)
    if rt.manager is None:
        raise TritonUnavailable(f"instance '{name}' has not started")
    report = DrainReport(name)
    resident = await _vacate(fleet, rt, report)
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


async def restart(fleet: Fleet, name: InstanceName,
                  why: str = "requested by the operator") -> DrainReport | None:
    """An operator's restart of one embedded instance that fails and delays no request:
    its traffic moves first as for a drain (needed models made ready elsewhere, in-flight
    requests and open sequences finished), then Triton restarts and restores what it had,
    then it takes traffic again. Alone in the fleet it simply restarts (None). Errors as
    ``TritonSupervisor.restart``."""
    rt = fleet.runtime(name)
    if rt.supervisor is None:
        raise TritonUnavailable(f"instance '{name}' has not started")
    report = None
    if rt.routable and any(o.accepting for o in fleet.order if o is not rt):
        report = DrainReport(name)
        await _vacate(fleet, rt, report)
    try:
        await rt.supervisor.restart(why)
    finally:
        rt.draining = rt.cordoned = False
    return report


async def _vacate(fleet: Fleet, rt: InstanceRuntime, report: DrainReport) -> list[ModelName]:
    """Cordon ``rt``, make what it holds ready elsewhere, stop routing to it, wait for what
    is in flight; returns the models resident on it."""
    assert rt.manager is not None
    name = rt.name
    rt.cordoned = True
    resident = [s.name for s in rt.manager.statuses() if s.state in RESIDENT]
    planned = fleet.plan.replicas
    needed = [m for m in resident if m in fleet.pinned or not planned or fleet.plan.instances_of(m)]
    if any(o.accepting for o in fleet.order if o is not rt):
        gate = asyncio.Semaphore(FAILOVER_CONCURRENCY)

        async def move(model: ModelName) -> None:
            if fleet.ready_elsewhere(model, rt):
                report.moved[model] = "already ready elsewhere"
                return
            async with gate:
                try:
                    await fleet.load(model, trigger="drain", exclude=(name,))
                    where = ",".join(s.instance for s in fleet.replicas(model)
                                     if s.state is ModelState.READY and s.instance != name)
                    report.moved[model] = where
                    fleet.record("drain load", model, where, f"instance {name} drains", "ok")
                except ControlPlaneError as exc:
                    report.moved[model] = f"failed: {exc}"
                    fleet.record("drain load", model, name, f"instance {name} drains",
                                 f"failed: {exc}")

        await asyncio.gather(*(move(m) for m in needed))
    rt.draining = True
    report.waited_s = round(await wait_settled(fleet, rt, None,
                                               fleet.options.drain_timeout_s), 3)
    report.in_flight_left = rt.outstanding
    report.sequences_left = fleet.sequences.open_on(name)
    return resident


def resume(fleet: Fleet, name: InstanceName) -> None:
    """End a drain: the instance takes requests and replicas again."""
    rt = fleet.runtime(name)
    rt.draining = rt.cordoned = False
