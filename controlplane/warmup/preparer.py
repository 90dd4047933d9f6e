"""Which warm-up each load applies: the stored config, regenerated when traffic moved.

Implements the lifecycle's LoadPreparer: the repository's config.pbtxt plus the generated
``model_warmup`` (after any samples config.pbtxt has itself) as a ``config`` override, and --
only when the config needs data files -- the whole model directory plus those files as
``file:`` overrides. The repository on disk is never touched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from controlplane.config import WarmupOptions
from controlplane.lifecycle.states import LoadPlan
from controlplane.traffic.store import TrafficStore
from controlplane.triton.repository import ModelRepository, ModelSpec
from controlplane.types import ModelName
from controlplane.warmup.configs import StoredWarmup, WarmupStore
from controlplane.warmup.generate import generate_warmup, uncovered_share
from controlplane.warmup.inputs import read_traffic
from controlplane.warmup.types import WarmupSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drift:
    model: ModelName
    #: share of the window's requests outside the latest config
    uncovered: float
    requests: int

    def describe(self) -> str:
        return (f"{self.uncovered:.0%} of the last {self.requests} requests fall outside "
                "the warm-up config")


class WarmupPreparer:
    def __init__(self, *, repository: ModelRepository, warmups: WarmupStore,
                 traffic: TrafficStore, options: WarmupOptions) -> None:
        self.repository = repository
        self.warmups = warmups
        self.traffic = traffic
        self.options = options
        #: the config each model was last loaded with (what probes exercise)
        self.applied: dict[ModelName, StoredWarmup] = {}

    def generator_settings(self) -> WarmupSettings:
        o = self.options
        return WarmupSettings(
            coverage=o.coverage, batch_coverage=o.batch_coverage, max_samples=o.max_samples,
            max_buckets_per_dim=o.max_buckets_per_dim, count=o.count,
            max_total_elements=o.max_total_elements,
            default_variable_length=o.default_variable_length)

    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        stored = await self.warmups.db.run(self.current, spec)
        files = None
        if stored.files:
            # a file override replaces the whole model directory: send all of it
            files = {**await self.warmups.db.run(self.repository.files, spec.name),
                     **stored.files}
        self.applied[spec.name] = stored
        config = dict(spec.config)
        if stored.samples:
            # an operator's own samples in config.pbtxt keep running, ours come after them
            config["model_warmup"] = [*spec.config.get("model_warmup", []), *stored.samples]
        return LoadPlan(config=config, files=files, details={
            "warmup_version": stored.version, "warmup_samples": len(stored.samples),
            "warmup_coverage": stored.coverage, "warmup_files_bytes":
                sum(len(d) for d in stored.files.values())})

    def current(self, spec: ModelSpec) -> StoredWarmup:
        """The config to apply now (blocking: database and generation)."""
        latest = self.warmups.latest(spec.name)
        if latest is None:
            return self.regenerate(spec, "first load")
        if latest.default:
            view = read_traffic(self.traffic, spec.name, since=time.time() - self._window_s(),
                                min_recent=self.options.min_requests)
            if view.requests >= self.options.min_requests:
                return self.regenerate(spec, f"traffic recorded ({view.requests} requests) "
                                             "replaces the default")
        drift = self.drift(spec.name, latest)
        if drift is not None:
            return self.regenerate(spec, f"drift: {drift.describe()}")
        return latest

    def regenerate(self, spec: ModelSpec, reason: str) -> StoredWarmup:
        view = read_traffic(self.traffic, spec.name, since=time.time() - self._window_s(),
                            min_recent=self.options.min_requests)
        # The config's range says what is valid; an observed one only what was seen (rarely
        # 0, which would force a data file and a re-upload of the whole model per load).
        observed = {name: bounds for name, bounds in view.value_ranges.items()
                    if f"input_range.{name}" not in spec.parameters}
        plan = generate_warmup(
            spec, view.shapes, batch_stats=self.warmups.batch_stats(spec.name) or None,
            value_ranges=observed, samples=view.samples, settings=self.generator_settings())
        stored = self.warmups.save(spec.name, plan, reason)
        log.info("warm-up config v%d for %s (%s): %d samples, %.0f%% coverage",
                 stored.version, spec.name, reason, len(plan.samples), 100 * plan.coverage)
        return stored

    def drift(self, model: ModelName, latest: StoredWarmup) -> Drift | None:
        """Whether recent traffic moved outside ``latest`` past the threshold."""
        view = read_traffic(self.traffic, model, since=time.time() - self.options.drift_window_s,
                            min_recent=1)
        if view.requests < self.options.min_requests:
            return None
        share = uncovered_share(latest.covered, view.shapes)
        if share <= self.options.drift_threshold:
            return None
        return Drift(model, share, view.requests)

    def _window_s(self) -> float:
        return self.options.recent_window_h * 3600
