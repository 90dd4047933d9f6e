"""What each instance gets when it joins the fleet, and gives back when it leaves.

A membership listener (``Fleet.membership_listeners``): failover when its Triton goes down
(after its manager's own listener, which marks models cold), crash tracing, the clients'
shared-memory registrations restored before a restarted Triton is routed to, and a standby
promoted at once when a serving instance fails (``on_down``). Also what the gateway tells
about an instance (:meth:`InstanceWiring.upstream_error`), and drift's batch statistics read
from every instance (:class:`FleetBatchStats`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from controlplane.background import Background
from controlplane.fleet.crashes import CrashTracker
from controlplane.fleet.failover import Failover
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.lifecycle.recovery import signals_lost
from controlplane.lifecycle.states import ModelState
from controlplane.types import InstanceName, ModelName


class InstanceWiring:
    def __init__(self, fleet: Fleet, crashes: CrashTracker) -> None:
        self.fleet = fleet
        self.crashes = crashes
        self.failovers: dict[InstanceName, Failover] = {}
        #: called with the name of a serving instance whose Triton stopped serving
        self.on_down: list[Callable[[InstanceName, str], None]] = []
        self._closing = Background()

    def attached(self, rt: InstanceRuntime) -> None:
        assert rt.supervisor is not None
        failover = self.failovers[rt.name] = Failover(self.fleet, rt)
        rt.supervisor.listeners.append(failover)  # after its manager's
        rt.supervisor.listeners.append(_Down(self, rt))
        self.crashes.watch(rt)
        rt.supervisor.before_live.append(
            functools.partial(self.fleet.shared_memory.restore, rt.name))

    def upstream_error(self, instance: str, model: ModelName, status: str,
                       message: str) -> None:
        """Triton failed a request the gateway forwarded (``status``: gRPC status name):
        that Triton itself may be gone (probe it now), or it lost the model (check, reload)."""
        rt = self.fleet.runtimes.get(instance)
        if rt is None:
            return
        self.crashes.request_failed(instance, model, status)
        if rt.supervisor is not None and status == "UNAVAILABLE":
            rt.supervisor.poke()
        if rt.manager is not None and signals_lost(status, message):
            rt.manager.model_lost(model, message)

    def detached(self, rt: InstanceRuntime) -> None:
        failover = self.failovers.pop(rt.name, None)
        if failover is not None:
            self._closing.spawn(failover.close())

    async def close(self) -> None:
        await self._closing.close()
        for failover in self.failovers.values():
            await failover.close()


class _Down:
    """A supervisor listener: a serving instance's Triton stopped serving."""

    def __init__(self, wiring: InstanceWiring, rt: InstanceRuntime) -> None:
        self.wiring, self.rt = wiring, rt

    async def triton_down(self, reason: str) -> None:
        if self.rt.phase.value == "serving":
            for hook in self.wiring.on_down:
                hook(self.rt.name, reason)

    async def triton_up(self) -> None:
        return None


class FleetBatchStats:
    """Drift's batch statistics (``warmup/drift.py``), from every instance the model is
    ready on."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def collect_all(self, models: Sequence[ModelName]) -> None:
        wanted = set(models)
        for rt, manager in self.fleet.managers():
            if rt.batch_stats is not None:
                await rt.batch_stats.collect_all(
                    [s.name for s in manager.statuses()
                     if s.name in wanted and s.state is ModelState.READY])
