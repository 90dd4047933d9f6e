"""The policy's budget follows the fleet: the budgets of the instances that serve, summed.

The policy sees the fleet as one budget (``placement.py`` keeps each instance's own at load
time). Instances join, leave and are promoted from standby while warmctl runs, so the sum is
recomputed on each change: a standby's or a warming instance's budget is not the policy's to
spend until it serves. The GPU budget of each instance is found once, when it starts (its
Triton's metrics say what GPUs it sees).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controlplane.config import SchedulerOptions
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.states import InstanceState
from controlplane.scheduler.gpus import detect_gpus, resolve_gpu_budget
from controlplane.types import InstanceName

log = logging.getLogger(__name__)

#: phases whose budget the policy spends (a draining one's still holds its models)
COUNTED = frozenset({InstanceState.SERVING, InstanceState.DRAINING,
                     InstanceState.PROVISIONING})


class FleetBudgets:
    def __init__(self, fleet: Fleet, options: SchedulerOptions,
                 apply: Callable[[SchedulerOptions], None] = lambda options: None) -> None:
        self.fleet = fleet
        self.options = options
        #: given the options with the new budgets on each :meth:`refresh`
        self.apply = apply
        #: instance -> its GPU budget (MB), found at start
        self.gpu_mb: dict[InstanceName, float] = {}

    async def measure(self, rt: InstanceRuntime) -> None:
        """Find ``rt``'s GPU budget (once, when it has started)."""
        assert rt.instance is not None
        gpus = await detect_gpus(rt.instance.metrics)
        self.gpu_mb[rt.name] = resolve_gpu_budget(rt.spec.gpu_memory_budget_mb, gpus,
                                                  self.options.gpu_memory_reserve_mb)
        if gpus:
            log.info("GPUs seen by Triton instance %s: %d", rt.name, len(gpus))

    def counted(self) -> list[InstanceRuntime]:
        return [rt for rt in self.fleet.order if rt.phase in COUNTED]

    def host_mb(self) -> float | None:
        """The host budgets of the counted instances summed; None when one is unlimited."""
        budgets = [rt.budget_mb() for rt in self.counted()]
        if any(b is None for b in budgets):
            return None
        return sum(b for b in budgets if b is not None)

    def gpu_total_mb(self) -> float:
        return sum(self.gpu_mb.get(rt.name, 0.0) for rt in self.counted())

    def refresh(self) -> None:
        """The fleet changed (a join, a leave, a promotion): hand over the new budgets."""
        self.apply(self.current())

    def attached(self, rt: InstanceRuntime) -> None:
        self.refresh()

    def detached(self, rt: InstanceRuntime) -> None:
        self.gpu_mb.pop(rt.name, None)
        self.refresh()

    def current(self) -> SchedulerOptions:
        """The scheduler's options with the budgets the fleet has now."""
        return self.options.model_copy(update={"gpu_memory_budget_mb": self.gpu_total_mb(),
                                               "memory_budget_mb": self.host_mb()})
