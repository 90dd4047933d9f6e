"""Which warm-up each load applies: only samples the model has already served.

Implements the lifecycle's LoadPreparer. A generated sample (a shape and batch size that
traffic sent, with valid data) first goes out as a probe request after a load without it;
only once that probe succeeded ("proven") does it enter ``model_warmup``, appended after the
operator's own samples of config.pbtxt. A warm-up that fails fails the load, and can crash
Triton 2.51: what plain Triton serves must keep loading. Triton runs a sample of batch N as N
requests of batch 1 in one ``execute``; so such a sample is proven by N concurrent batch-1
probe requests (which the dynamic batcher groups the same way), and without a dynamic batcher
it never enters ``model_warmup`` at all (it is sent as a probe of one batch-N request). So:

* no traffic yet, nothing proven yet, a rejected version, a per-model ``warmup = false``,
  an ensemble, a stateful (``sequence_batching``) or decoupled model: no ``config`` override
  at all (config.pbtxt as on disk), and the reason in the load details (``warmup``);
* when Triton refuses a load with our warm-up (:meth:`WarmupPreparer.rejected`), that version
  is marked rejected with Triton's reason and never applied again, nor an identical
  regeneration;
* data files make the load send the whole model directory as ``file:`` overrides: above
  ``max_file_override_bytes`` the samples that need files are left out (zero-data ones stay).
  The directory is sized with ``stat`` and read only when it is sent.
* models whose config.pbtxt names no inputs (completed by ``auto_complete_config``) are
  warmed from the config Triton reports after their first (plain) load.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import OperationalError

from controlplane.config import ModelSettings, WarmupOptions
from controlplane.errors import ConfigError, StoreUnavailable
from controlplane.lifecycle.states import LoadPlan
from controlplane.store.writebehind import describe
from controlplane.traffic.store import TrafficStore
from controlplane.triton.repository import ModelRepository, ModelSpec, spec_from_json
from controlplane.types import ModelConfigJson, ModelName
from controlplane.warmup.configs import (
    FAILED,
    PROVEN,
    REJECTED,
    StoredWarmup,
    WarmupStore,
)
from controlplane.warmup.generate import generate_warmup, uncovered_share
from controlplane.warmup.inputs import read_traffic
from controlplane.warmup.types import WarmupPlan, WarmupSettings

log = logging.getLogger(__name__)

_SAMPLE_IN_REASON = re.compile(r"warmup sample '([^']+)'")


@dataclass(frozen=True)
class Drift:
    model: ModelName
    #: share of the window's requests outside the latest config
    uncovered: float
    requests: int

    def describe(self) -> str:
        return (f"{self.uncovered:.0%} of the last {self.requests} requests fall outside "
                "the warm-up config")


@dataclass
class Applied:
    """What the last load of a model carried, and what the probes after it may send."""

    spec: ModelSpec
    stored: StoredWarmup | None = None
    #: samples in the load's ``model_warmup`` (Triton's JSON form)
    applied: list[dict[str, Any]] = field(default_factory=list)
    #: samples of the version not proven yet: each is probed once to prove it
    pending: list[dict[str, Any]] = field(default_factory=list)
    #: samples that never enter ``model_warmup`` but are sent as probes (see _plan)
    probe_only: list[dict[str, Any]] = field(default_factory=list)
    #: why no probe may be sent (None: probes allowed)
    no_probe: str | None = None


class WarmupPreparer:
    def __init__(self, *, repository: ModelRepository, warmups: WarmupStore,
                 traffic: TrafficStore, options: WarmupOptions,
                 models: Mapping[str, ModelSettings] | None = None) -> None:
        self.repository = repository
        self.warmups = warmups
        self.traffic = traffic
        self.options = options
        self.models = dict(models or {})
        self._storing = threading.RLock()
        #: per model, what its last load carried (what probes exercise)
        self.applied: dict[ModelName, Applied] = {}
        #: configs Triton completed (auto_complete_config), as its ModelConfig RPC gave them
        self.completed: dict[ModelName, ModelConfigJson] = {}
        #: (model, version) Triton refused: never applied again, even before the store has it
        self._rejected: set[tuple[ModelName, int]] = set()

    def generator_settings(self) -> WarmupSettings:
        o = self.options
        return WarmupSettings(
            coverage=o.coverage, batch_coverage=o.batch_coverage, max_samples=o.max_samples,
            max_buckets_per_dim=o.max_buckets_per_dim, count=o.count,
            max_total_elements=o.max_total_elements,
            default_variable_length=o.default_variable_length)

    # -- what kind of model ------------------------------------------------------------------
    def effective(self, spec: ModelSpec) -> ModelSpec:
        """``spec``, or, when config.pbtxt names no inputs, the config Triton completed (with
        config.pbtxt's own ``model_warmup``, not whatever a previous load added)."""
        completed = self.completed.get(spec.name)
        if spec.inputs or completed is None:
            return spec
        config = {k: v for k, v in completed.items() if k != "model_warmup"}
        if spec.config.get("model_warmup"):
            config["model_warmup"] = spec.config["model_warmup"]
        try:
            return spec_from_json(spec.name, config)
        except ConfigError as exc:  # not ours to fail a load over: warm it as if unknown
            log.warning("%s: the completed config Triton reports does not parse: %s",
                        spec.name, exc)
            return spec

    def remember_completed(self, model: ModelName, config: ModelConfigJson) -> None:
        self.completed[model] = config

    def why_none(self, spec: ModelSpec) -> str | None:
        """Why ``spec`` gets no generated warm-up and no probes (None: it may have both)."""
        settings = self.models.get(spec.name)
        if settings is not None and not settings.warmup:
            return f"off for this model (models.{spec.name}.warmup = false)"
        if spec.is_ensemble:
            return ("ensemble: Triton forbids model_warmup on it; its composing models are "
                    "warmed by their own loads")
        if spec.sequence_batching:
            return ("stateful (sequence_batching): Triton's warm-up carries no sequence "
                    "control inputs, and probes would have to open sequences")
        if spec.decoupled:
            return "decoupled: answers only through a stream; not warmed or probed"
        return None

    # -- the load ----------------------------------------------------------------------------
    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        spec = self.effective(spec)
        if (why := self.why_none(spec)) is not None:
            self.applied[spec.name] = Applied(spec, no_probe=why)
            return LoadPlan(details={"warmup": f"none: {why}"})
        if not spec.inputs:
            self.applied[spec.name] = Applied(spec)
            return LoadPlan(details={"warmup": "none yet: config.pbtxt names no inputs; the "
                                               "config Triton completes is read after this load"})
        try:
            stored, proofs = await self.warmups.db.call(self._current_and_proofs, spec)
        except (ConfigError, StoreUnavailable) as exc:  # a malformed warmctl.* parameter, a
            # store that cannot answer now: the load goes on plain (what Triton serves, we do)
            self.applied[spec.name] = Applied(spec, no_probe=str(exc))
            return LoadPlan(details={"warmup": f"none: {exc}"})
        return await self._plan(spec, stored, proofs)

    def _current_and_proofs(self, spec: ModelSpec) -> tuple[StoredWarmup, dict[str, str]]:
        # one at a time: loads of one model on several instances of a fleet run together,
        # and each would otherwise store the model's first version (a unique key) itself
        with self._storing:
            return self.current(spec), self.warmups.proofs(spec.name)

    async def _plan(self, spec: ModelSpec, stored: StoredWarmup,
                    proofs: dict[str, str]) -> LoadPlan:
        details: dict[str, Any] = {"warmup_version": stored.version,
                                   "warmup_coverage": stored.coverage}
        entry = Applied(spec, stored)
        self.applied[spec.name] = entry
        if stored.rejected_at is not None or (spec.name, stored.version) in self._rejected:
            details["warmup"] = f"none: v{stored.version} was rejected by Triton"
            details["warmup_samples"] = 0
            return LoadPlan(details=details)
        for sample in stored.samples:
            state = proofs.get(stored.sample_key(sample))
            if int(sample.get("batch_size", 1)) > 1 and not spec.dynamic_batching:
                # Triton's warm-up of batch N hands the model N requests in one execute, a
                # form that only a dynamic batcher produces in service: without one, such a
                # sample warms by a probe (one request of batch N, as clients send it)
                entry.probe_only.append(sample)
            elif state == PROVEN:
                entry.applied.append(sample)
            elif state is None:
                entry.pending.append(sample)
        files = {f"warmup/{i['input_data_file']}" for s in entry.applied
                 for i in s["inputs"].values() if "input_data_file" in i}
        directory = 0
        if files:
            directory = await asyncio.to_thread(self.repository.weight_bytes, spec.name)
            total = directory + sum(len(stored.files[f]) for f in files)
            if total > self.options.max_file_override_bytes:
                kept = [s for s in entry.applied
                        if not any("input_data_file" in i for i in s["inputs"].values())]
                details["warmup_files_skipped"] = (
                    f"{len(entry.applied) - len(kept)} sample(s) need data files, which would "
                    f"send the whole model directory ({total:,} bytes) as file overrides, over "
                    f"max_file_override_bytes {self.options.max_file_override_bytes:,}")
                entry.applied, files = kept, set()
        details.update({"warmup_samples": len(entry.applied),
                        "warmup_pending": len(entry.pending),
                        "warmup_probe_only": len(entry.probe_only),
                        "warmup_files_bytes": sum(len(stored.files[f]) for f in files)})
        if not entry.applied:
            details["warmup"] = ("none yet: no sample proven by a probe" if stored.samples
                                 else "none: no traffic-shaped sample")
            return LoadPlan(details=details)
        config = dict(spec.config)
        config["model_warmup"] = [*spec.config.get("model_warmup", []), *entry.applied]
        model_files = None
        if files:
            model_files = {**await asyncio.to_thread(self.repository.files, spec.name),
                           **{f: stored.files[f] for f in files}}
        details["warmup"] = f"{len(entry.applied)} proven sample(s) of v{stored.version}"
        return LoadPlan(config=config, files=model_files, details=details)

    async def rejected(self, model: ModelName, plan: LoadPlan, reason: str) -> None:
        """The manager's ``additions_rejected`` hook: Triton refused (or died during) a load
        with ``plan``. Marks the applied version rejected with ``reason``; a sample Triton
        names as failing is never applied again in any version."""
        entry = self.applied.get(model)
        if entry is None or entry.stored is None or not entry.applied:
            return  # our warm-up was not part of that load (placement, say)
        stored = entry.stored
        marks: dict[str, tuple[str, str | None]] = {}
        names = set(_SAMPLE_IN_REASON.findall(reason))
        for sample in entry.applied:
            if sample.get("name") in names:
                marks[stored.sample_key(sample)] = (REJECTED, reason)
        # queued (a load never waits on the disk); remembered here until then and after
        self._rejected.add((model, stored.version))
        self.warmups.queue_reject(model, stored.version, reason)
        await self.warmups.db.writes.settle(self.warmups.queue_proofs(model, marks))
        log.warning("%s: Triton refused warm-up v%d; it is not applied again: %s",
                    model, stored.version, reason.splitlines()[0] if reason else "")
        # the manager loads it plain next: the probes after that load send no applied sample
        entry.applied = []

    async def record_probes(self, model: ModelName,
                            outcomes: Mapping[str, str | None]) -> None:
        """Sample key -> None (served) or the probe's error."""
        await self.warmups.db.writes.settle(self.warmups.queue_proofs(model, {
            key: (PROVEN, None) if error is None else (FAILED, error)
            for key, error in outcomes.items()}))

    # -- versions ----------------------------------------------------------------------------
    def current(self, spec: ModelSpec) -> StoredWarmup:
        """The version to apply now (blocking: database and generation)."""
        latest = self.warmups.latest(spec.name)
        if latest is None:
            return self.regenerate(spec, "first load")
        try:
            return self._newer(spec, latest)
        except OperationalError as exc:  # a new version cannot be stored now: keep the latest
            log.warning("%s: warm-up not regenerated, the store refuses writes (%s)",
                        spec.name, describe(exc))
            return latest

    def _newer(self, spec: ModelSpec, latest: StoredWarmup) -> StoredWarmup:
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
        with self._storing:  # see _current_and_proofs
            return self._regenerate(spec, reason)

    def _regenerate(self, spec: ModelSpec, reason: str) -> StoredWarmup:
        spec = self.effective(spec)
        if (why := self.why_none(spec)) is not None:
            plan = WarmupPlan((), {}, 0.0, True, (f"no generated warm-up: {why}",))
        elif not spec.inputs:
            plan = WarmupPlan((), {}, 0.0, True, (
                "no generated warm-up yet: config.pbtxt names no inputs and the config Triton "
                "completes is read after the model's first load",))
        else:
            view = read_traffic(self.traffic, spec.name, since=time.time() - self._window_s(),
                                min_recent=self.options.min_requests)
            # The config's range says what is valid; an observed one only what was seen.
            observed = {name: bounds for name, bounds in view.value_ranges.items()
                        if f"input_range.{name}" not in spec.parameters}
            plan = generate_warmup(
                spec, view.shapes, batch_stats=self.warmups.batch_stats(spec.name) or None,
                value_ranges=observed, samples=view.samples,
                settings=self.generator_settings())
        stored = self.warmups.save(spec.name, plan, reason)
        log.info("warm-up config v%d for %s (%s): %d samples, %.0f%% coverage%s",
                 stored.version, spec.name, reason, len(plan.samples), 100 * plan.coverage,
                 ", rejected earlier: not applied" if stored.rejected_at else "")
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
