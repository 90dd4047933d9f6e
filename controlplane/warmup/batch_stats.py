"""Triton's batch statistics, kept across unloads: the batch sizes traffic really forms.

Triton's counters start at zero with every load and include warm-up and probe executions; the
tracker takes a baseline once a model is warm and stores only what traffic added since.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from controlplane.errors import ControlPlaneError
from controlplane.triton.client import TritonClient
from controlplane.types import ModelName
from controlplane.warmup.configs import WarmupStore

log = logging.getLogger(__name__)


def executions_by_batch(stats: dict[str, Any]) -> dict[int, int]:
    """batch size -> executions, summed over the model's versions."""
    result: dict[int, int] = {}
    for version in stats.get("model_stats", []):
        for entry in version.get("batch_stats", []):
            size = int(entry["batch_size"])
            result[size] = result.get(size, 0) + int(entry["compute_infer"].get("count", 0))
    return result


def warmup_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """What Triton spent on warm-up: taken right after a load, before any request."""
    executions = compute_ns = 0
    for version in stats.get("model_stats", []):
        for entry in version.get("batch_stats", []):
            executions += int(entry["compute_infer"].get("count", 0))
            compute_ns += sum(int(entry[k].get("ns", 0)) for k in
                              ("compute_input", "compute_infer", "compute_output"))
    return {"warmup_executions": executions, "warmup_s": compute_ns / 1e9}


class BatchStatsTracker:
    def __init__(self, client: TritonClient, warmups: WarmupStore) -> None:
        self.client = client
        self.warmups = warmups
        self._baseline: dict[ModelName, dict[int, int]] = {}

    async def settled_statistics(self, model: ModelName, *, expected: int,
                                 settle_s: float = 1.0) -> dict[str, Any]:
        """Triton's statistics once they count ``expected`` executions (or ``settle_s`` on).

        Triton reports an execution's statistics after its response has left, so a read right
        after the last warm-up sample or probe can miss it: read early, a probe would later
        count as traffic, and a warm-up sample would go missing from the load's figures.
        """
        deadline = time.monotonic() + settle_s
        while True:
            stats = await self.client.statistics(model)
            counted = sum(executions_by_batch(stats).values())
            if counted >= expected:
                return stats
            if time.monotonic() >= deadline:
                log.warning("%s: Triton's statistics count %d executions after %.1fs, "
                            "expected %d; going on with them", model, counted, settle_s,
                            expected)
                return stats
            await asyncio.sleep(0.01)

    async def reset(self, model: ModelName, *, expected: int = 0,
                    settle_s: float = 1.0) -> None:
        """Baseline the counters once they hold the ``expected`` warm-up and probe executions."""
        stats = await self.settled_statistics(model, expected=expected, settle_s=settle_s)
        self._baseline[model] = executions_by_batch(stats)

    async def collect(self, model: ModelName) -> dict[int, int]:
        """Store what traffic executed since the baseline; returns that delta."""
        if model not in self._baseline:
            return {}  # not loaded by us since start-up: nothing trustworthy to subtract
        current = executions_by_batch(await self.client.statistics(model))
        base = self._baseline[model]
        delta = {b: n - base.get(b, 0) for b, n in current.items() if n > base.get(b, 0)}
        self._baseline[model] = current
        if delta:  # queued: an unload never waits on the disk
            await self.warmups.db.writes.settle(
                self.warmups.queue_batch_stats(model, delta, time.time()))
        return delta

    async def collect_all(self, models: Iterable[ModelName]) -> None:
        for model in models:
            try:
                await self.collect(model)
            except ControlPlaneError:
                self._baseline.pop(model, None)  # unloaded meanwhile

    def forget(self, model: ModelName) -> None:
        self._baseline.pop(model, None)
