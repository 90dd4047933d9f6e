"""The inference path without a transport: admit a request for a model to one replica.

gRPC unary calls, gRPC streams and a future HTTP front door only convert to and from this:
``admit`` returns the instance that serves the request -- a ready replica picked by the
router (or, for a step of an open sequence, the replica that holds the sequence), or, for a
cold model, the one its single load made ready within the request's deadline. A load whose
instance dies or is drained moves elsewhere, and the waiter keeps waiting within its
deadline. ``retry_on`` says whether a request that failed upstream may go once more to
another replica. Errors are our own (:mod:`controlplane.errors`); each transport maps them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from controlplane.errors import DeadlineExceeded, TritonUnavailable
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.sequences import Sequence
from controlplane.types import InstanceName, ModelName

#: how often one request may find its replica gone between a load and its routing (an
#: instance dying, a drain starting) before it fails
MAX_ADMITS = 3
#: gRPC statuses from a replica warmctl itself is removing (or whose Triton just died) after
#: which the request goes to another replica: Triton did not run it
RETRIED = frozenset({"UNAVAILABLE", "NOT_FOUND"})


class InferencePath:
    def __init__(self, fleet: Fleet, default_deadline_s: float = 120.0) -> None:
        self.fleet = fleet
        self.default_deadline_s = default_deadline_s

    def route(self, model: ModelName, exclude: Collection[InstanceName] = (),
              sequence: Sequence | None = None) -> InstanceRuntime | None:
        """A replica for one request now (the hot path), or None."""
        if sequence is not None and self.fleet.stateful(model):
            return self._route_sequence(model, sequence, exclude)
        rt = self.fleet.router.pick(model)
        if rt is not None and rt.name in exclude:
            rest = [c for c in self.fleet.router.candidates(model) if c.name not in exclude]
            return min(rest, key=lambda c: c.outstanding, default=None)
        return rt

    def _route_sequence(self, model: ModelName, sequence: Sequence,
                        exclude: Collection[InstanceName]) -> InstanceRuntime | None:
        """A step of an open sequence goes where its START went while Triton there still
        serves the model (even a draining instance or a leaving replica: the state is
        there); a new sequence goes where the router puts it."""
        fleet, table = self.fleet, self.fleet.sequences
        if not sequence.start:
            held = table.where(model, sequence.id)
            rt = fleet.runtimes.get(held) if held is not None else None
            if (rt is not None and rt.name not in exclude and rt.live
                    and rt.manager is not None and rt.manager.ready_now(model)):
                if sequence.end:
                    table.ended(model, sequence.id)
                return rt
        rt = fleet.router.pick(model)
        if rt is not None and rt.name in exclude:
            rt = next((c for c in fleet.router.candidates(model) if c.name not in exclude),
                      None)
        if rt is not None:
            if sequence.end:
                table.ended(model, sequence.id)
            else:
                table.opened(model, sequence.id, rt.name)
        return rt

    async def wait_ready(self, model: ModelName, budget_s: float | None,
                         exclude: Collection[InstanceName] = ()) -> None:
        """Wait for ``model`` to be ready on some replica (outside ``exclude``), loading it
        on one instance if none has it. Raises ModelNotFound, TritonUnavailable (no instance
        serving: at once), ModelLoadFailed, Conflict (held cold) or DeadlineExceeded (the
        load goes on)."""
        down = self.fleet.down_reason()
        if down is not None:  # a load would only fail, or hang on a hung Triton
            self.fleet.status(model)  # an unknown name stays NOT_FOUND
            raise TritonUnavailable(f"model '{model}' is unavailable: {down}; retry later")
        budget = self.default_deadline_s if budget_s is None else budget_s
        try:
            await asyncio.wait_for(self.fleet.ensure_ready(model, exclude=exclude),
                                   max(budget, 0.0))
        except TimeoutError:
            raise DeadlineExceeded(
                f"model '{model}' was not ready within the request's deadline ({budget:.3g}s); "
                "its load goes on") from None

    async def admit(self, model: ModelName, budget_s: float | None,
                    exclude: Collection[InstanceName] = (),
                    sequence: Sequence | None = None) -> tuple[InstanceRuntime, bool]:
        """The replica for one request and whether it waited for a load (``cold``)."""
        rt = self.route(model, exclude, sequence)
        if rt is not None:
            return rt, False
        loop = asyncio.get_running_loop()
        budget = self.default_deadline_s if budget_s is None else budget_s
        deadline = loop.time() + budget
        for _ in range(MAX_ADMITS):
            await self.wait_ready(model, deadline - loop.time(), exclude)
            rt = self.route(model, exclude, sequence)
            if rt is not None:
                return rt, True
            # ready, then gone before it could be routed (its instance died or started
            # draining): the load moves elsewhere, within the same deadline
        raise TritonUnavailable(f"model '{model}' has no ready replica now: "
                                + self.fleet.why_unavailable())

    def retry_on(self, rt: InstanceRuntime, model: ModelName, status: str,
                 sequence: Sequence | None) -> bool:
        """Whether a request that failed on ``rt`` with gRPC ``status`` goes to another
        replica: Triton was unreachable (it died), or warmctl itself is removing that
        replica (it answers NOT_FOUND or UNAVAILABLE while it unloads). A step inside an
        open sequence is not moved: its state is where it was."""
        if status not in RETRIED or (sequence is not None and not sequence.start):
            return False
        if status == "UNAVAILABLE":
            return True
        return (model in rt.leaving or not rt.routable or rt.manager is None
                or not rt.manager.ready_now(model))
