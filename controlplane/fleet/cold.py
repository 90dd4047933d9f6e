"""One load per cold model, whoever asks for it, that outlives its instance.

Every request for a model no replica serves (and the failover, the drain, the operator's
fleet-wide load) waits on one task per model: it loads the model on the instance
``Fleet.choose`` names and, when that instance dies, hangs or starts draining during the load,
on the next one -- the waiters keep waiting, each within its own deadline (a request's
``asyncio.wait_for`` around :meth:`ColdLoads.load` gives up waiting, not the load). A caller
that must not use some instances (a drain moving models off one) starts a load of its own
unless the one in flight already avoids them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from controlplane.errors import ControlPlaneError, TritonUnavailable
from controlplane.types import InstanceName, ModelName

if TYPE_CHECKING:
    from controlplane.fleet.fleet import Fleet

log = logging.getLogger(__name__)


def triton_went_away(exc: BaseException) -> bool:
    """A load failed because its Triton stopped serving (died, hung, restarting), not
    because of the model."""
    return isinstance(exc, TritonUnavailable) or isinstance(exc.__cause__, TritonUnavailable)


class ColdLoads:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        #: model -> the shared load and the instances it does not use
        self._loads: dict[ModelName, tuple[asyncio.Task[None], frozenset[InstanceName]]] = {}

    async def load(self, model: ModelName, trigger: str,
                   exclude: Collection[InstanceName] = ()) -> None:
        """Join the model's load in flight (if it avoids ``exclude``), else start one.
        Errors as ``ModelManager.load``, or TritonUnavailable when no instance can take it."""
        excluded = frozenset(exclude)
        found = self._loads.get(model)
        if found is None or not excluded <= found[1]:
            task = asyncio.create_task(self._somewhere(model, trigger, set(excluded)),
                                       name=f"fleet-load-{model}")
            self._loads[model] = found = (task, excluded)
            task.add_done_callback(lambda t: self._done(model, t))
        await asyncio.shield(found[0])

    async def _somewhere(self, model: ModelName, trigger: str,
                         exclude: set[InstanceName]) -> None:
        fleet = self.fleet
        while True:
            rt = fleet.choose(model, exclude=exclude)  # TritonUnavailable once none is left
            assert rt.manager is not None
            try:
                await rt.manager.load(model, trigger=trigger)
            except ControlPlaneError as exc:
                if rt.accepting and not triton_went_away(exc):
                    raise  # the model failed, not its instance
                log.warning("load of %s on %s did not finish (%s): loading it elsewhere",
                            model, rt.name, exc)
                exclude.add(rt.name)
                continue
            if fleet.ready_now(model, exclude) or rt.accepting:
                return
            exclude.add(rt.name)  # ready, but its instance stopped taking requests meanwhile

    def _done(self, model: ModelName, task: asyncio.Task[None]) -> None:
        found = self._loads.get(model)
        if found is not None and found[0] is task:
            del self._loads[model]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up
