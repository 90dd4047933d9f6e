"""The fleet as the serving core's ``Replicas`` port: where a request goes, what happened.

``route`` is the hot path: the router's pick among the model's replicas that serve it now,
or, for a step of an open sequence of a stateful model, the replica that holds the
sequence (even on an instance being drained, while Triton there still serves the model; see
``sequences.py``). ``wait_ready`` is a request's lazy load within its deadline (one load
per model, moved elsewhere when its instance dies or drains: ``cold.py``). ``retry_on`` and
``failed`` are what the path asks and tells when a replica answered with an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from controlplane.errors import (
    ControlPlaneError,
    DeadlineExceeded,
    ErrorCode,
    HeldCold,
    TritonUnavailable,
    echo_name,
)
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.serving.facts import Sequence
from controlplane.serving.ports import Replica
from controlplane.serving.router import route_step
from controlplane.serving.status import Status
from controlplane.serving.versions import VersionSplit
from controlplane.types import InstanceName, ModelName

#: statuses from a replica warmctl itself is removing (or whose Triton just died) after which
#: the request goes to another replica: Triton did not run it
RETRIED = frozenset({Status.UNAVAILABLE, Status.NOT_FOUND})


class FleetReplicas:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        #: told (instance, model, status name, message) of every error a replica answered
        #: with: a lost model or a dead Triton is noticed on the first one
        self.on_failure: list[Callable[[str, str, str, str], None]] = []

    def route(self, model: ModelName, exclude: Collection[InstanceName] = (),
              sequence: Sequence | None = None) -> InstanceRuntime | None:
        if sequence is not None and self.fleet.stateful(model):
            return self._route_sequence(model, sequence, exclude)
        router = self.fleet.router
        rt = router.pick(model)
        if rt is not None and rt.name in exclude:
            rest = [c for c in router.candidates(model) if c.name not in exclude]
            return min(rest, key=lambda c: c.outstanding, default=None)
        return rt

    def _route_sequence(self, model: ModelName, sequence: Sequence,
                        exclude: Collection[InstanceName]) -> InstanceRuntime | None:
        """A step of an open sequence goes where its START went while Triton there still
        serves the model (the state is there); a new sequence goes where the router puts
        it."""
        fleet = self.fleet

        def holder(name: str) -> InstanceRuntime | None:
            rt = fleet.runtimes.get(name)
            return rt if (rt is not None and rt.live and rt.manager is not None
                          and rt.manager.ready_now(model)) else None

        return route_step(fleet.router, fleet.sequences, model, sequence, exclude, holder)

    def ready_now(self, model: ModelName) -> bool:
        return self.fleet.ready_now(model)

    async def wait_ready(self, model: ModelName, budget_s: float,
                         exclude: Collection[InstanceName] = ()) -> None:
        down = self.fleet.down_reason()
        if down is not None:  # a load would only fail, or hang on a hung Triton
            self.fleet.status(model)  # an unknown name stays NOT_FOUND
            raise TritonUnavailable(f"model '{model}' is unavailable: {down}; retry later")
        unhealthy = self.unhealthy(model, exclude)
        if unhealthy is not None:  # loaded, and broken: no load would help the request
            raise TritonUnavailable(f"model '{model}' is unavailable: {unhealthy}; retry later")
        try:
            await asyncio.wait_for(self.fleet.ensure_ready(model, exclude=exclude),
                                   max(budget_s, 0.0))
        except HeldCold as exc:
            # what plain Triton answers for a model unloaded through its repository API
            # (clients branch on NOT_FOUND), with why after it
            raise ControlPlaneError(
                f"Request for unknown model: '{echo_name(model)}' has no available versions: "
                f"{exc.message}", code=ErrorCode.NOT_FOUND) from None
        except TimeoutError:
            raise DeadlineExceeded(
                f"model '{model}' was not ready within the request's deadline "
                f"({max(budget_s, 0.0):.3g}s); its load goes on") from None

    def unhealthy(self, model: ModelName, exclude: Collection[InstanceName] = ()
                  ) -> str | None:
        """Why ``model`` has no replica to serve a request when each of its replicas failed
        its health check (``health.py``); None while one serves or none is unhealthy."""
        fleet = self.fleet
        reasons = [f"{rt.name}: {rt.unhealthy[model]}" for rt in fleet.order
                   if model in rt.unhealthy]
        if not reasons or fleet.ready_now(model, exclude):
            return None
        return "every replica is unhealthy (" + "; ".join(reasons) + ")"

    def retry_on(self, replica: Replica, model: ModelName, status: Status,
                 sequence: Sequence | None) -> bool:
        """Triton was unreachable (it died), or warmctl itself is removing that replica (it
        answers NOT_FOUND or UNAVAILABLE while it unloads). A step inside an open sequence
        is not moved: its state is where it was."""
        if status not in RETRIED or (sequence is not None and not sequence.start):
            return False
        if status is Status.UNAVAILABLE:
            return True
        rt = self.fleet.runtimes.get(replica.name)
        return (rt is None or model in rt.leaving or not rt.routable or rt.manager is None
                or not rt.manager.ready_now(model))

    def failed(self, instance: InstanceName, model: ModelName, status: Status,
               message: str) -> None:
        if status is Status.CANCELLED:  # the client gave up: nothing about the replica
            return
        for hook in self.on_failure:
            hook(instance, model, status.value, message)

    def why_unavailable(self) -> str:
        return self.fleet.why_unavailable()

    def split(self, model: str) -> VersionSplit | None:
        return self.fleet.splits.get(model)
