"""The inference path without a transport: admit a request for a model to one replica.

gRPC unary calls, gRPC streams and a future HTTP front door only convert to and from this:
``admit`` returns the instance that serves the request -- a ready replica picked by the
router, or, for a cold model, the one its single load made ready within the request's
deadline. Errors are our own (:mod:`controlplane.errors`); each transport maps them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from controlplane.errors import DeadlineExceeded, TritonUnavailable
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.types import InstanceName, ModelName


class InferencePath:
    def __init__(self, fleet: Fleet, default_deadline_s: float = 120.0) -> None:
        self.fleet = fleet
        self.default_deadline_s = default_deadline_s

    def route(self, model: ModelName, exclude: Collection[InstanceName] = ()
              ) -> InstanceRuntime | None:
        """A ready replica now (the hot path), or None."""
        rt = self.fleet.router.pick(model)
        if rt is not None and rt.name in exclude:
            rest = [c for c in self.fleet.router.candidates(model) if c.name not in exclude]
            return min(rest, key=lambda c: c.outstanding, default=None)
        return rt

    async def wait_ready(self, model: ModelName, budget_s: float | None) -> None:
        """Wait for ``model`` to be ready on some replica, loading it on one instance if
        none has it. Raises ModelNotFound, TritonUnavailable (no instance serving: at once),
        ModelLoadFailed, Conflict (held cold) or DeadlineExceeded (the load goes on)."""
        down = self.fleet.down_reason()
        if down is not None:  # a load would only fail, or hang on a hung Triton
            self.fleet.status(model)  # an unknown name stays NOT_FOUND
            raise TritonUnavailable(f"model '{model}' is unavailable: {down}; retry later")
        budget = self.default_deadline_s if budget_s is None else budget_s
        try:
            await asyncio.wait_for(self.fleet.ensure_ready(model), max(budget, 0.0))
        except TimeoutError:
            raise DeadlineExceeded(
                f"model '{model}' was not ready within the request's deadline ({budget:.3g}s); "
                "its load goes on") from None

    async def admit(self, model: ModelName, budget_s: float | None,
                    exclude: Collection[InstanceName] = ()) -> tuple[InstanceRuntime, bool]:
        """The replica for one request and whether it waited for a load (``cold``)."""
        rt = self.route(model, exclude)
        if rt is not None:
            return rt, False
        await self.wait_ready(model, budget_s)
        rt = self.route(model, exclude)
        if rt is None:  # became unready between the load and now (an instance died)
            raise TritonUnavailable(f"model '{model}' has no ready replica now: "
                                    + self.fleet.why_unavailable())
        return rt, True
