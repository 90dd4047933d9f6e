"""Taking a replica out without losing a request: stop routing to it, let what is in flight
finish, then unload.

Triton finishes the requests it has when it unloads a model, but a request the router picked
just before and sent just after the unload began fails ("has no available versions"), and a
stateful model unloaded under open sequences breaks every one of them. So a replica that
leaves while another replica serves the model (a surplus trim, a drain, room made on an
instance) is first marked ``leaving`` -- the router stops picking it at once, new sequences
start elsewhere -- then the removal waits until nothing for the model is in flight there and
its open sequences have ended or gone idle (up to ``fleet.drain_timeout_s``), and only then
asks Triton to unload it. A model's last replica is unloaded at once: there is nowhere else
to send its requests, and the next one loads it again.
"""

from __future__ import annotations

import asyncio
import time

from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.lifecycle.states import ModelState, ModelStatus
from controlplane.types import ModelName

#: how often a removal looks at the counters it waits on (plain ints on the hot path: no
#: event to wait for)
POLL_S = 0.02


def settled(fleet: Fleet, rt: InstanceRuntime, model: ModelName | None = None) -> bool:
    """Nothing in flight on ``rt`` (for ``model``, or at all) and no open sequence there."""
    upstream = rt.upstream
    if upstream is not None and (upstream.in_flight(model) if model is not None
                                 else upstream.busy):
        return False
    return fleet.sequences.open_on(rt.name, model) == 0


async def wait_settled(fleet: Fleet, rt: InstanceRuntime, model: ModelName | None,
                       timeout_s: float) -> float:
    """Wait until :func:`settled` (or ``timeout_s``); returns the seconds waited."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while not settled(fleet, rt, model) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL_S)
    return time.monotonic() - t0


async def wait_in_flight(rt: InstanceRuntime, timeout_s: float) -> float:
    """Wait until nothing is in flight on ``rt`` (or ``timeout_s``); the seconds waited."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while rt.upstream is not None and rt.upstream.busy > 0 \
            and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL_S)
    return time.monotonic() - t0


async def remove_replica(fleet: Fleet, rt: InstanceRuntime, model: ModelName, *,
                         trigger: str) -> ModelStatus:
    """Unload ``model`` from ``rt`` without failing a request another replica could serve
    (see the module's docstring). Errors as ``ModelManager.unload``."""
    assert rt.manager is not None
    if rt.manager.state(model) is not ModelState.READY or not fleet.ready_elsewhere(model, rt):
        return await rt.manager.unload(model, trigger=trigger, force=True)
    rt.leaving.add(model)
    try:
        await fleet.publish()  # gateway workers route by the table: none picks it now
        await wait_settled(fleet, rt, model, fleet.options.drain_timeout_s)
        return await rt.manager.unload(model, trigger=trigger, force=True)
    finally:
        rt.leaving.discard(model)
