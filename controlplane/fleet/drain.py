"""Taking an instance out of the fleet without failing or delaying a request: drain, resume,
and an operator's restart.

Drain: the instance is cordoned (no new loads or replicas, requests still come); each model it
holds that is needed (pinned, planned by the last replica plan, open sequences, or not in a
plan yet) is made ready on another instance while it still serves; then it takes no new
requests, and the requests in flight on it finish (up to ``fleet.drain_timeout_s``); then its
models are unloaded and it idles until resumed. A stateful model with open sequences stays
where their state is: its steps still reach it (``sequences.py``) and it is unloaded in the
background once they have ended or idled past the model's own limit (within the drain
timeout), so a client that finishes its sequences after the drain returned loses none.

Restart: its traffic moves first as for a drain, then Triton restarts and restores what it
had, then it takes traffic again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from controlplane.errors import ControlPlaneError, TritonUnavailable
from controlplane.fleet.failover import FAILOVER_CONCURRENCY
from controlplane.fleet.fleet import RESIDENT, Fleet
from controlplane.fleet.removal import wait_in_flight, wait_settled
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.states import InstanceState
from controlplane.lifecycle.states import ModelState
from controlplane.types import InstanceName, ModelName

log = logging.getLogger(__name__)


@dataclass
class DrainReport:
    instance: InstanceName
    #: model -> where it was loaded (instance) or why not
    moved: dict[ModelName, str] = field(default_factory=dict)
    #: requests still in flight when the wait ended (0: all finished)
    in_flight_left: int = 0
    #: sequences of stateful models still open when the drain returned
    sequences_left: int = 0
    waited_s: float = 0.0
    unloaded: list[ModelName] = field(default_factory=list)
    #: stateful model -> why it stays a while (its open sequences), unloaded once they end
    lingering: dict[ModelName, str] = field(default_factory=dict)
    errors: dict[ModelName, str] = field(default_factory=dict)


async def drain(fleet: Fleet, name: InstanceName,
                why: str = "drained by the operator") -> DrainReport:
    """Drain instance ``name`` (see the module's docstring); idempotent."""
    rt = fleet.runtime(name)
    if rt.manager is None:
        raise TritonUnavailable(f"instance '{name}' has not started")
    report = DrainReport(name)
    started = time.monotonic()
    resident = await _vacate(fleet, rt, report, sequences=False, why=why)
    for model in resident:
        open_now = fleet.sequences.open_on(name, model)
        if open_now:
            report.lingering[model] = (
                f"{open_now} open sequence(s): unloaded once they end or idle out (within "
                f"{fleet.options.drain_timeout_s:g}s of the drain)")
            fleet.background.spawn(_unload_after_sequences(
                fleet, rt, model, started + fleet.options.drain_timeout_s))
            continue
        await _unload(fleet, rt, model, report)
    report.sequences_left = fleet.sequences.open_on(name)
    return report


async def _unload(fleet: Fleet, rt: InstanceRuntime, model: ModelName,
                  report: DrainReport | None) -> None:
    assert rt.manager is not None
    why = f"instance {rt.name} drained"
    try:
        await rt.manager.unload(model, trigger="drain", force=True)
    except ControlPlaneError as exc:
        fleet.record("drain", model, rt.name, why, f"failed: {exc}")
        if report is not None:
            report.errors[model] = str(exc)
        return
    fleet.record("drain", model, rt.name, why, "unloaded")
    if report is not None:
        report.unloaded.append(model)


async def _unload_after_sequences(fleet: Fleet, rt: InstanceRuntime, model: ModelName,
                                  deadline: float) -> None:
    """A drained instance's stateful model: unloaded once its open sequences are over (or
    at ``deadline``, monotonic); left as it is if the drain ended meanwhile (resumed)."""
    await wait_settled(fleet, rt, model, max(0.0, deadline - time.monotonic()))
    if rt.draining:
        await _unload(fleet, rt, model, None)


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
        # a restart loses Triton's sequence state: give open sequences their time first
        await _vacate(fleet, rt, report, sequences=True, why=f"restart: {why}")
    try:
        await rt.supervisor.restart(why)
    finally:
        rt.cordoned = False
        if rt.draining:
            rt.move(InstanceState.SERVING, "restarted by the operator")
    return report


def _needed(fleet: Fleet, rt: InstanceRuntime, model: ModelName) -> bool:
    """Whether ``model`` must be ready elsewhere before ``rt`` stops taking its requests:
    pinned, given a replica by the last plan, not in a plan yet, or with open sequences."""
    replicas = fleet.plan.replicas.get(model)
    return (model in fleet.pinned or replicas is None or bool(replicas)
            or fleet.sequences.open_on(rt.name, model) > 0)


async def _vacate(fleet: Fleet, rt: InstanceRuntime, report: DrainReport, *,
                  sequences: bool, why: str) -> list[ModelName]:
    """Cordon ``rt``, make what it holds ready elsewhere, stop routing to it, wait for what
    is in flight (and, with ``sequences``, for its open sequences); returns the models
    resident on it."""
    assert rt.manager is not None
    name = rt.name
    rt.cordoned = True
    resident = [s.name for s in rt.manager.statuses() if s.state in RESIDENT]
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

        await asyncio.gather(*(move(m) for m in resident if _needed(fleet, rt, m)))
    if not rt.draining:
        rt.move(InstanceState.DRAINING, why)
    await fleet.publish()  # gateway workers route by the table: none routes here now
    timeout = fleet.options.drain_timeout_s
    if sequences:
        waited = await wait_settled(fleet, rt, None, timeout)
    else:
        waited = await wait_in_flight(rt, timeout)
    report.waited_s = round(waited, 3)
    report.in_flight_left = rt.upstream.busy if rt.upstream is not None else 0
    report.sequences_left = fleet.sequences.open_on(name)
    return resident


def resume(fleet: Fleet, name: InstanceName) -> None:
    """End a drain: the instance takes requests and replicas again."""
    rt = fleet.runtime(name)
    rt.cordoned = False
    if rt.draining:
        rt.move(InstanceState.SERVING, "resumed by the operator")
