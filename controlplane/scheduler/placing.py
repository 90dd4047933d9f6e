"""Loads on the device the plan chose, noting how much of the model was in the page cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controlplane.lifecycle.manager import LoadPreparer
from controlplane.lifecycle.states import LoadPlan
from controlplane.scheduler.levels import Level, own_level, resident_fraction, with_device
from controlplane.triton.repository import ModelRepository, ModelSpec
from controlplane.types import ModelName


class PlacingPreparer:
    """Wraps another preparer (warm-up): same plan, on the chosen device."""

    def __init__(self, inner: LoadPreparer | None, repository: ModelRepository,
                 device_of: Callable[[ModelName], Level | None]) -> None:
        self.inner = inner
        self.repository = repository
        self.device_of = device_of

    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        plan = await self.inner.prepare(spec) if self.inner else LoadPlan()
        # only a move the plan chose (off the GPU, to stay within the GPU budget) changes the
        # device; a model loads where its own config says otherwise
        device = self.device_of(spec.name)
        config = plan.config
        effective: Level | str | None = own_level(spec.instance_kind)
        if device is Level.CPU and effective is not Level.CPU:
            config = with_device(config or spec.config, device)
            effective = device
        elif effective is None:  # KIND_AUTO: Triton's choice, the GPU where the plan has one
            effective = device or "auto"
        files = [p for p in self.repository.model_dir(spec.name).rglob("*") if p.is_file()]
        cached = await asyncio.to_thread(resident_fraction, files)
        details = {**(plan.details or {}),
                   "device": str(effective),
                   "page_cache": round(cached, 3)}
        return LoadPlan(config=config, files=plan.files, details=details)
