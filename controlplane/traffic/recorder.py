"""The gateway's in-memory traffic buffer, handed to the store's write-behind every flush.

``record`` is on the gateway's hot path: it appends a tuple and returns. Everything else --
signatures, roll-ups, SQL -- happens when the write-behind writes a batch, off the event loop.

Records are bounded and counted: at most ``max_buffer`` are held (buffered here plus queued
in the write-behind while the store refuses writes); beyond that a record is dropped and
counted (``dropped_by["full"]``), as are batches the store can never take (``error``) and
those still queued when a clean stop's flush ran out of time (``stopped``). After a SIGKILL
what is lost is what was held: with a healthy store, the records of the last
``flush_interval_s``; while the store refuses writes, everything since it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial

from controlplane.store.writebehind import Outcome
from controlplane.traffic.admission import admit
from controlplane.traffic.observation import Observation, signature_of
from controlplane.traffic.ranges import RangeSampler
from controlplane.traffic.store import Retention, TrafficStore

log = logging.getLogger(__name__)


class PayloadSampler:
    """Decides which requests' payloads to keep: opted-in models only, bounded per shape."""

    def __init__(self, models: Iterable[str], *, per_shape: int = 4,
                 max_sample_bytes: int = 1 << 20, max_model_bytes: int = 16 << 20) -> None:
        self.models = frozenset(models)
        self.per_shape = per_shape
        self.max_sample_bytes = max_sample_bytes
        self.max_model_bytes = max_model_bytes
        self._kept: dict[tuple[str, str], int] = {}
        self._model_bytes: dict[str, int] = {}

    def load(self, totals: dict[tuple[str, str], tuple[int, int]]) -> None:
        self._kept = {key: n for key, (n, _) in totals.items()}
        self._model_bytes = {}
        for (model, _), (_, size) in totals.items():
            self._model_bytes[model] = self._model_bytes.get(model, 0) + size

    def wants(self, observation: Observation, size: int) -> bool:
        """Whether to keep this request's payload (and count it as kept)."""
        model = observation.model
        if model not in self.models or size > self.max_sample_bytes:
            return False
        if self._model_bytes.get(model, 0) + size > self.max_model_bytes:
            return False
        key = (model, signature_of(observation.inputs).text)
        if self._kept.get(key, 0) >= self.per_shape:
            return False
        self._kept[key] = self._kept.get(key, 0) + 1
        self._model_bytes[model] = self._model_bytes.get(model, 0) + size
        return True


class TrafficRecorder:
    def __init__(
        self,
        store: TrafficStore,
        *,
        flush_interval_s: float = 1.0,
        max_buffer: int = 200_000,
        retention: Retention | None = None,
        prune_interval_s: float = 300.0,
        sampler: PayloadSampler | None = None,
        ranges: RangeSampler | None = None,
        declared: Callable[[str], frozenset[str] | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``declared``: a model's declared input names, None for a model not in the
        repository (see ``admission.py``); unset, every observation is kept as it is."""
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.retention = retention or Retention()
        self.prune_interval_s = prune_interval_s
        self.sampler = sampler
        self.ranges = ranges
        self.declared = declared
        self.clock = clock
        self.enabled = True
        #: observations dropped, by why: ``full`` (``max_buffer`` held: the store fell behind
        #: or refuses writes), ``error`` (a batch the store can never take), ``stopped``
        #: (still queued when a clean stop's flush ran out of time)
        self.dropped_by: Counter[str] = Counter()
        #: requests for model names the repository does not have: counted, never stored
        self.unknown_models = 0
        self.written = 0
        self._buffer: list[Observation] = []
        #: observations handed to the write-behind and not written yet
        self._queued = 0
        self._task: asyncio.Task[None] | None = None
        #: called with every flushed batch as it is handed to the store (the forecast feed,
        #: the request counters): what was served counts whether or not the disk takes it
        self.listeners: list[Callable[[list[Observation]], None]] = []
        #: called with each observation as it is recorded (known models only, full buffer
        #: or not), on the hot path: a hook must be cheap; what it raises is logged (the traffic
        #: ramp's per-replica outcomes, ``fleet/ramp.py``)
        self.on_observation: list[Callable[[Observation], None]] = []
        #: told after each pass of the flush loop: None, or the exception it ended on (health)
        self.on_pass: Callable[[BaseException | None], None] | None = None

    def record(self, observation: Observation) -> None:
        if not self.enabled:
            return
        if self.declared is not None:
            declared = self.declared(observation.model)
            if declared is None:
                self.unknown_models += 1
                return
            observation = admit(observation, declared)
        for hook in self.on_observation:
            try:
                hook(observation)
            except Exception:  # a hook's trouble is its own, never the request's
                log.exception("observation hook failed")
        if len(self._buffer) + self._queued >= self.max_buffer:
            self.dropped_by["full"] += 1
            return
        self._buffer.append(observation)

    @property
    def dropped(self) -> int:
        """Observations dropped for any reason (``dropped_by`` says why)."""
        return sum(self.dropped_by.values())

    @property
    def held(self) -> int:
        """Observations recorded and not written yet (buffered or queued)."""
        return len(self._buffer) + self._queued

    def wants_payload(self, observation: Observation, size: int) -> bool:
        return self.sampler is not None and self.sampler.wants(observation, size)

    def wants_witness(self) -> bool:
        """Whether the gateway should hand this served request's bytes over for value ranges
        (read at flush time, never stored)."""
        return self.ranges is not None and self.ranges.wants()

    async def start(self) -> None:
        if self.sampler is not None:
            self.sampler.load(await self.store.db.run(self.store.sample_totals))
        self._task = asyncio.create_task(self._run(), name="traffic-flush")

    async def _run(self) -> None:
        next_prune = self.clock()
        unknown_logged = 0
        failures = 0
        while True:
            # a pass that failed (a bug: a hand-off cannot fail on the store) backs off
            await asyncio.sleep(min(self.flush_interval_s * 2.0 ** failures, 30.0))
            try:
                await self.flush()
                if self.clock() >= next_prune:
                    self.store.db.writes.submit("retention", self._prune, key="traffic-prune")
                    next_prune = self.clock() + self.prune_interval_s
                    if self.unknown_models > unknown_logged:  # once per prune interval at most
                        log.info("%d requests for model names not in the repository so far "
                                 "(counted, not recorded)", self.unknown_models)
                        unknown_logged = self.unknown_models
            except Exception as exc:  # a bad flush must not end recording
                failures = min(failures + 1, 8)
                log.exception("traffic flush failed")
                if self.on_pass is not None:
                    self.on_pass(exc)
            else:
                failures = 0
                if self.on_pass is not None:
                    self.on_pass(None)

    def _prune(self) -> None:
        removed = self.store.prune(self.clock(), self.retention)
        if any(removed.values()):
            log.info("traffic retention removed %s", removed)

    async def flush(self) -> int:
        """Hand what is buffered now to the store's write-behind (written in order when the
        store takes it); returns how many observations. Never fails on the store: while it is
        healthy this waits for the write (at most the write-behind's ``settle_s``)."""
        batch, self._buffer = self._buffer, []
        if not batch:
            return 0
        self._queued += len(batch)
        done = self.store.db.writes.submit("traffic", partial(self.store.write, batch),
                                           weight=len(batch))
        done.add_done_callback(partial(self._ended, len(batch)))
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:  # a listener's trouble is its own
                log.exception("traffic listener failed")
        await self.store.db.writes.settle(done)
        return len(batch)

    def _ended(self, n: int, done: asyncio.Future[Outcome]) -> None:
        self._queued -= n
        outcome = "stopped" if done.cancelled() else done.result()
        if outcome == "written":
            self.written += n
        else:
            self.dropped_by[outcome] += n

    async def stop(self) -> None:
        """Stop the flush loop and hand everything still buffered to the write-behind (the
        control plane then writes what is queued within a bound, and counts the rest)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
