"""The inference path: one request from admission to its record, whatever the transport.

``call`` does the whole request: admit it to a replica (a ready one the router picks, or,
for a cold model, the one its single load made ready within the request's deadline; a load
whose instance dies or is drained moves elsewhere and the request keeps waiting), send it
with the transport's own ``send``, send it once more to another replica where the first was
unreachable or being removed, and record the outcome. Errors are ours
(:class:`~controlplane.errors.ControlPlaneError`) or a replica's answer
(:class:`UpstreamError`); each front door maps them to its own statuses once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from controlplane.errors import ControlPlaneError, TritonUnavailable
from controlplane.serving.facts import RequestFacts, Sequence
from controlplane.serving.ports import Observations, Replica, Replicas
from controlplane.serving.status import Status
from controlplane.serving.versions import choose
from controlplane.traffic.observation import Observation

T = TypeVar("T")

#: how often one request may find its replica gone between a load and its routing (an
#: instance dying, a drain starting) before it fails
MAX_ADMITS = 3
#: a served request's bytes are handed to the value-range reader (1 in
#: ``traffic.range_sample_every``) only up to this size: it holds them until the next flush
WITNESS_MAX_BYTES = 4 << 20

#: seconds left of the request's deadline, now (None: the client set none)
Budget = Callable[[], float | None]


class UpstreamError(Exception):
    """A replica answered with an error, or could not be reached: the status in our words,
    Triton's message, and the transport's own error (to answer the client with as is)."""

    def __init__(self, status: Status, message: str, original: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.original = original


class InferencePath:
    def __init__(self, replicas: Replicas, observations: Observations | None = None,
                 default_deadline_s: float = 120.0) -> None:
        self.replicas = replicas
        self.observations = observations
        self.default_deadline_s = default_deadline_s

    async def admit(self, model: str, budget_s: float | None,
                    exclude: Collection[str] = (), sequence: Sequence | None = None
                    ) -> tuple[Replica, bool]:
        """The replica for one request and whether it waited for a load (``cold``)."""
        rt = self.replicas.route(model, exclude, sequence)
        if rt is not None:
            return rt, False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.default_deadline_s if budget_s is None else budget_s)
        for _ in range(MAX_ADMITS):
            await self.replicas.wait_ready(model, deadline - loop.time(), exclude)
            rt = self.replicas.route(model, exclude, sequence)
            if rt is not None:
                return rt, True
            # ready, then gone before it could be routed (its instance died or started
            # draining): the load moves elsewhere, within the same deadline
        raise TritonUnavailable(f"model '{model}' has no ready replica now: "
                                + self.replicas.why_unavailable())

    async def call(self, facts: RequestFacts, payload: bytes | None, budget: Budget,
                   send: Callable[[Replica, str | None], Awaitable[T]]) -> T:
        """Serve one request: ``send`` it to the replica admitted (with the version to name
        in it, None: as it came; ``serving/versions.py``), retried once where that failed
        for a reason another replica does not share, and recorded. ``payload``: the
        request's bytes for the recorder's samples (None: none kept). Raises
        ControlPlaneError (admission) or UpstreamError (the replica's answer)."""
        arrived = time.time()
        model, sequence = facts.model, facts.sequence
        version = choose(self.replicas.split(model), facts.version)
        if version is not None:  # recorded as the version that served it
            facts = facts._replace(version=version)
        try:
            rt, cold = await self.admit(model, budget(), sequence=sequence)
        except ControlPlaneError as exc:
            # unknown names too: the recorder counts them and stores nothing
            self.finish(facts, arrived, Status.of(exc), True, time.time() - arrived, payload)
            raise
        wait_s = time.time() - arrived if cold else None
        tried: list[str] = []
        while True:
            try:
                response = await self._send(rt, model, send, version)
                break
            except UpstreamError as exc:
                self.replicas.failed(rt.name, model, exc.status, exc.message)
                if not tried and self.replicas.retry_on(rt, model, exc.status, sequence):
                    tried.append(rt.name)
                    try:
                        rt, waited = await self.admit(model, budget(), exclude=tried,
                                                      sequence=sequence)
                    except ControlPlaneError:
                        pass  # nowhere else now: the client gets the replica's own answer
                    else:
                        if waited and wait_s is None:
                            cold, wait_s = True, time.time() - arrived
                        continue
                self.finish(facts, arrived, exc.status, cold, wait_s, payload,
                            instance=rt.name)
                raise
        self.finish(facts, arrived, Status.OK, cold, wait_s, payload, instance=rt.name)
        return response

    @staticmethod
    async def _send(rt: Replica, model: str, send: Callable[[Replica, str | None], Awaitable[T]],
                    version: str | None) -> T:
        upstream = rt.upstream
        assert upstream is not None  # a routable replica has started
        upstream.begin(model)  # plain ints: the hot path
        upstream.requests += 1
        try:
            return await send(rt, version)
        finally:
            upstream.end(model)

    def finish(self, facts: RequestFacts, arrived: float, outcome: Status, cold: bool,
               wait_s: float | None, payload: bytes | None, *,
               latency_known: bool = True, instance: str | None = None) -> None:
        """Record one request's outcome (``payload``: its bytes, for the samples;
        ``instance``: the replica that answered, None when none was reached)."""
        recorder = self.observations
        if recorder is None or not recorder.enabled:
            return
        observation = Observation(facts.model, facts.version, facts.inputs, arrived,
                                  time.time() - arrived if latency_known else None,
                                  outcome.value, cold, wait_s, instance=instance)
        if payload is not None and facts.raw_spans and outcome is Status.OK:
            if recorder.wants_payload(observation, len(payload)):
                observation = observation._replace(payload=(payload, facts.raw_spans))
            elif len(payload) <= WITNESS_MAX_BYTES and recorder.wants_witness():
                # no copy: the bytes are read at flush time
                observation = observation._replace(witness=(payload, facts.raw_spans))
        recorder.record(observation)
