"""The background job that notices when traffic moves away from a model's warm-up config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controlplane.config import WarmupOptions
from controlplane.errors import ControlPlaneError
from controlplane.lifecycle.states import ModelState, ModelStatus
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName
from controlplane.warmup.preparer import WarmupPreparer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Regenerated:
    model: ModelName
    old_version: int
    new_version: int
    reason: str
    reloaded: bool


class Models(Protocol):
    """The models drift watches (one instance's manager, or the fleet)."""

    @property
    def repository(self) -> ModelRepository: ...
    def statuses(self) -> list[ModelStatus]: ...
    def ready_now(self, name: ModelName) -> bool: ...
    async def reload(self, name: ModelName, *, trigger: str = ...) -> ModelStatus: ...


class BatchStats(Protocol):
    async def collect_all(self, models: Sequence[ModelName]) -> object: ...


class DriftWatcher:
    def __init__(self, *, manager: Models, preparer: WarmupPreparer,
                 batch_stats: BatchStats, options: WarmupOptions) -> None:
        self.manager = manager
        self.preparer = preparer
        self.batch_stats = batch_stats
        self.options = options

    async def check(self) -> list[Regenerated]:
        """Save batch statistics, then regenerate (and maybe reload) drifted models."""
        ready = [s.name for s in self.manager.statuses() if s.state is ModelState.READY]
        await self.batch_stats.collect_all(ready)
        db = self.preparer.warmups.db
        changed = []
        for status in self.manager.statuses():
            name = status.name
            latest = await db.run(self.preparer.warmups.latest, name)
            if latest is None:
                continue  # never loaded: its first load generates one
            drift = await db.run(self.preparer.drift, name, latest)
            if drift is None:
                continue
            spec = self.manager.repository.spec(name)
            stored = await db.run(self.preparer.regenerate, spec, f"drift: {drift.describe()}")
            if stored.version == latest.version:
                continue  # the same samples still come out: nothing to apply
            reload = self.options.reload_on_drift and self.manager.ready_now(name)
            if reload:
                try:
                    await self.manager.reload(name, trigger="drift")
                except ControlPlaneError as exc:
                    log.warning("reload of %s with warm-up v%d failed: %s",
                                name, stored.version, exc)
                    reload = False
            changed.append(Regenerated(name, latest.version, stored.version, drift.describe(),
                                       reload))
            log.info("%s: warm-up v%d -> v%d (%s)%s", name, latest.version, stored.version,
                     drift.describe(), ", reloaded" if reload else ", applies at next load")
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.options.drift_check_interval_s)
            try:
                await self.check()
            except Exception:  # one bad pass must not end the watcher
                log.exception("warm-up drift check failed")
