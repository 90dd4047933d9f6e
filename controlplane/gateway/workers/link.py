"""A worker's side of the pipe: its lazy loads asked of the control process, what it tells
it (replica failures), and its traffic observations, batched into reports.

Observations are the serving core's ``Observations`` port here: each request's outcome is
appended to a bounded list that the next report carries (every ``report_interval_s``); past
``max_unreported`` they are dropped and counted (``recorder_dropped_total{reason="worker"}``
once reported). The control process alone writes the store. Payload samples are chosen
here by the same rule as in the control process (per model and shape, bounded), and checked
again there against the totals it keeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Collection

from controlplane.errors import DeadlineExceeded, TritonUnavailable
from controlplane.gateway.workers import protocol
from controlplane.gateway.workers.protocol import Report, WorkerConfig
from controlplane.traffic.observation import Observation
from controlplane.traffic.ranges import RangeSampler
from controlplane.traffic.recorder import PayloadSampler

#: beyond the request's own budget, how long a worker waits for the control process's answer
#: to a lazy load (the control process answers within the budget itself)
_ANSWER_MARGIN_S = 2.0


class ControlLink:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[str, str] | None]] = {}
        self.closed = False

    def send(self, message: tuple[object, ...]) -> None:
        if not self.closed:
            protocol.write(self._writer, message)

    async def ensure(self, model: str, exclude: Collection[str], budget_s: float) -> None:
        """Ask the control process to make ``model`` ready outside ``exclude`` within
        ``budget_s``; raises its error (ModelNotFound, ModelLoadFailed, DeadlineExceeded...).
        The routing table that shows the model ready arrives before the answer."""
        if self.closed:
            raise TritonUnavailable("this gateway worker lost its control process; retry")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self.send(("ensure", request_id, model, tuple(exclude), max(budget_s, 0.0)))
        try:
            error = await asyncio.wait_for(future, max(budget_s, 0.0) + _ANSWER_MARGIN_S)
        except TimeoutError:
            raise DeadlineExceeded(f"model '{model}' was not ready within the request's "
                                   f"deadline ({max(budget_s, 0.0):.3g}s)") from None
        finally:
            self._pending.pop(request_id, None)
        if error is not None:
            raise protocol.decode_error(error)

    def answered(self, request_id: int, error: tuple[str, str] | None) -> None:
        future = self._pending.get(request_id)
        if future is not None and not future.done():
            future.set_result(error)

    def lost(self) -> None:
        """The control process is gone: every waiting load fails now."""
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_result(("UNAVAILABLE", "the gateway worker lost its control "
                                                  "process; retry"))


class WorkerObservations:
    """The ``Observations`` port of a worker (see the module's docstring)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.enabled = config.recording
        self.max_unreported = config.max_unreported
        self._sampler = PayloadSampler(
            config.sampled_models, per_shape=config.sample_per_shape,
            max_sample_bytes=config.sample_max_bytes,
            max_model_bytes=config.sample_max_model_bytes) if config.sampled_models else None
        self._ranges = RangeSampler(config.range_sample_every)
        self.pending: list[Observation] = []
        self.dropped = 0
        self.served = 0

    def record(self, observation: Observation) -> None:
        self.served += 1
        if len(self.pending) >= self.max_unreported:
            self.dropped += 1
            return
        self.pending.append(observation)

    def wants_payload(self, observation: Observation, size: int) -> bool:
        return self._sampler is not None and self._sampler.wants(observation, size)

    def wants_witness(self) -> bool:
        return self._ranges.wants()

    def take(self, report: Report) -> None:
        """Move what was recorded into ``report`` (the witnesses' bytes are copied then)."""
        report.observations, self.pending = self.pending, []
        report.dropped, self.dropped = self.dropped, 0
        report.served = self.served


async def report_every(interval_s: float, build: Callable[[], Report | None],
                       link: ControlLink) -> None:
    """Send a report every ``interval_s`` when there is something new to say."""
    while not link.closed:
        await asyncio.sleep(interval_s)
        report = build()
        if report is not None:
            link.send(("report", report))
