"""One health probe of one replica, the rules that judge it, and when each replica is
probed and reloaded (:class:`HealthSchedule`, pure); ``health.py`` runs them.

A probe is ONE request built as the load-time probes build theirs (``warmup/probe.py``): the
first of the model's proven warm-up samples (the load's ``model_warmup`` and probe-only
samples, never a sample still to prove), at its own batch size -- the request whose latency
the load's probes let settle -- or, with none, the generated batch-1 probe at the config's
default dims. A model the load-time probes may not touch (stateful, decoupled, ensemble,
warm-up off, inputs of unknown safe range) gets no health probe either.

It goes straight to the replica's Triton, never through the gateway: it is never recorded
as traffic, counted as a request of the instance, or seen by the router.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from controlplane.config import HealthSettings
from controlplane.errors import ConfigError
from controlplane.lifecycle.backoff import Backoff, BackoffPolicy
from controlplane.triton.repository import ModelSpec
from controlplane.types import InstanceName, ModelName
from controlplane.warmup.generate import default_probe
from controlplane.warmup.preparer import Applied, WarmupPreparer
from controlplane.warmup.probe import sample_request

#: an error message kept in a reason is cut to this many characters
_REASON_CHARS = 300

#: one replica: (instance, model)
Key = tuple[InstanceName, ModelName]


@dataclass(frozen=True)
class HealthRequest:
    label: str
    inputs: list[grpcclient.InferInput]
    #: rows in it (the sample's batch size; 1 for the generated probe)
    batch: int = 1


@dataclass(frozen=True)
class ProbeResult:
    """What one probe saw: its latency (None when it got no answer) and its error."""

    latency_s: float | None
    #: None: answered, every output finite
    error: str | None = None
    #: gRPC status name of a refused request (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``...)
    status: str | None = None

    @property
    def unreachable(self) -> bool:
        """Triton itself did not answer: the instance's liveness is in question."""
        return self.status == "UNAVAILABLE"


def health_request(preparer: WarmupPreparer, spec: ModelSpec) -> HealthRequest | str:
    """The probe for ``spec`` as its last load left it, or why it gets none (a string)."""
    entry = preparer.applied.get(spec.name) or Applied(preparer.effective(spec))
    if entry.no_probe is not None:
        return entry.no_probe
    stored, spec = entry.stored, entry.spec
    if stored is not None:
        for sample in [*entry.applied, *entry.probe_only]:
            try:
                return HealthRequest(str(sample.get("name")),
                                     sample_request(sample, stored.files, spec),
                                     max(1, int(sample.get("batch_size", 1))))
            except (ValueError, KeyError, InferenceServerException):
                continue  # a malformed sample: the next one, else the generated probe
    try:
        plan = default_probe(spec, settings=preparer.generator_settings())
    except ConfigError as exc:
        return str(exc)
    if isinstance(plan, str):
        return plan
    sample = plan.model_warmup()[0]
    return HealthRequest(f"default {sample['name']}",
                         sample_request(sample, dict(plan.files), spec))


async def send(client: triton_aio.InferenceServerClient, model: str, request: HealthRequest,
               timeout_s: float, version: str = "") -> ProbeResult:
    """Send ``request`` once (deadline ``timeout_s`` seconds) to ``version`` ("": Triton's
    choice); never raises for Triton's answer (an error is in the result)."""
    start = time.perf_counter()
    try:
        result = await client.infer(model, request.inputs, model_version=version,
                                    client_timeout=timeout_s)
    except InferenceServerException as exc:
        status = str(exc.status() or "").removeprefix("StatusCode.") or None
        if status == "DEADLINE_EXCEEDED":
            return ProbeResult(None, f"no answer within {timeout_s:g}s", status)
        message = (exc.message() or str(exc))[:_REASON_CHARS]
        return ProbeResult(None, f"{status or 'error'}: {message}", status)
    latency = time.perf_counter() - start
    bad = non_finite(result)
    return ProbeResult(latency, None if bad is None else f"non-finite output {bad}")


def non_finite(result: grpcclient.InferResult) -> str | None:
    """The first output holding NaN or infinity (its name), else None."""
    for output in result.get_response().outputs:
        array = result.as_numpy(output.name)
        if (array is not None and np.issubdtype(array.dtype, np.inexact)
                and not np.isfinite(array).all()):
            return f"'{output.name}'"
    return None


def verdict(result: ProbeResult, converged_s: float | None, options: HealthSettings
            ) -> str | None:
    """Why the probe says the replica is unhealthy, or None when it passed. Latency fails
    when above ``latency_factor`` times the converged probe latency of its load, and above
    ``latency_floor_ms`` (fast models jitter by far more than their factor)."""
    if result.error is not None:
        return f"health probe failed: {result.error}"
    if result.latency_s is None or converged_s is None or not math.isfinite(converged_s):
        return None
    bound = max(options.latency_factor * converged_s, options.latency_floor_ms / 1e3)
    if result.latency_s > bound:
        return (f"health probe took {result.latency_s * 1e3:.1f} ms, above "
                f"{bound * 1e3:.1f} ms ({options.latency_factor:g}x its converged probe "
                f"latency of {converged_s * 1e3:.1f} ms)")
    return None


class HealthSchedule:
    """When each replica is probed next, when it last answered real traffic well, and its
    reload back-off. Monotonic seconds throughout; pure (no I/O): the checker's decisions."""

    def __init__(self, options: HealthSettings, rng: random.Random | None = None) -> None:
        self.options = options
        self.rng = rng or random.Random()
        self.policy = BackoffPolicy(options.reload_initial_s, options.reload_multiplier,
                                    options.reload_max_s)
        self.next_at: dict[Key, float] = {}
        self.last_ok: dict[Key, float] = {}
        self.backoff: dict[Key, Backoff] = {}

    def interval(self) -> float:
        """One interval, drawn within ``interval_s * (1 +- jitter)``."""
        o = self.options
        return o.interval_s * (1.0 + self.rng.uniform(-o.jitter, o.jitter))

    def served(self, key: Key, now: float) -> None:
        """The replica answered a real request successfully."""
        self.last_ok[key] = now

    def should_probe(self, key: Key, now: float) -> bool:
        """Whether to probe now: its time came (a replica first seen waits one interval: its
        load just probed it), and no real request succeeded there within the interval."""
        at = self.next_at.get(key)
        if at is None or now < at:
            if at is None:
                self.next_at[key] = now + self.interval()
            return False
        self.next_at[key] = now + self.interval()
        return now - self.last_ok.get(key, float("-inf")) > self.options.interval_s

    def failed(self, key: Key, now: float) -> None:
        """Marked unhealthy, or a reload or probe of an unhealthy one failed: the next
        reload waits longer."""
        self.backoff.setdefault(key, Backoff(self.policy)).failed(now)

    def reload_due(self, key: Key, now: float) -> bool:
        backoff = self.backoff.get(key)
        return backoff is not None and not backoff.waiting(now)

    def retry_in(self, key: Key, now: float) -> float | None:
        at = self.backoff[key].retry_at() if key in self.backoff else None
        return None if at is None else max(0.0, at - now)

    def recovered(self, key: Key, now: float) -> None:
        self.backoff.pop(key, None)
        self.next_at[key] = now + self.interval()

    def forget(self, instance: InstanceName) -> None:
        for table in (self.next_at, self.last_ok, self.backoff):
            for key in [k for k in table if k[0] == instance]:
                del table[key]
