"""Periodic health checks: a replica that stops answering well leaves routing until it does.

Triton's own readiness says nothing about a model's answers (it stays READY after a CUDA
assert, server#3627), and after its load-time probes nothing else queries a loaded model: so
every ready replica on a routable instance is probed about every ``[health] interval_s``
(jittered), unless it answered real traffic successfully within the interval (traffic is the
better probe; it is never skipped for a replica whose requests fail). A probe that errs,
times out, returns NaN or infinity, or is far slower than its load's converged probe
latency (``health_probe.verdict``) marks the replica unhealthy with the reason
(``InstanceRuntime.unhealthy``): ``serves`` is False from that moment and the routing table
is republished. The replica is then reloaded on its instance with back-off (unloaded and
loaded afresh: Triton ignores a load of the config it has loaded) and probed; it takes
traffic again once a probe passes. The replica plan meanwhile counts it as not serving, so a
pinned model gets a replica elsewhere where an instance has room. A model whose every
replica is unhealthy answers UNAVAILABLE with the reasons (``replicas.py``).

A probe that finds Triton itself unreachable or hung pokes the instance's supervisor: a dead
or hung Triton goes through the fleet's down path (failover, restart, restore) rather than
through a per-model reload.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from tritonclient.grpc import aio as triton_aio

from controlplane.background import Background
from controlplane.config import HealthSettings
from controlplane.errors import ControlPlaneError
from controlplane.fleet.fleet import REPLICA_TRIGGER, Fleet
from controlplane.fleet.health_probe import (
    HealthSchedule,
    Key,
    ProbeResult,
    health_request,
    send,
    verdict,
)
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.lifecycle.states import ModelState
from controlplane.traffic.observation import Observation
from controlplane.types import InstanceName, ModelName
from controlplane.warmup.batch_stats import executions_by_batch

log = logging.getLogger(__name__)

class HealthChecker:
    """Probes the fleet's replicas (:meth:`step`, every ``tick_s``) and recovers the
    unhealthy ones in the background. Also a membership listener and a traffic hook."""

    def __init__(self, fleet: Fleet, options: HealthSettings, *,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.fleet = fleet
        #: the version a probe names (the model's active one); None: Triton's choice
        self.version_of: Callable[[ModelName], str | None] = lambda model: None
        self.options = options
        self.clock = clock
        self.schedule = HealthSchedule(options, rng)
        #: (instance, model) -> converged probe latency of its last load (seconds)
        self.converged: dict[Key, float] = {}
        #: (instance, model) -> its instance's epoch when marked (a restart reloaded it)
        self._epoch: dict[Key, int] = {}
        self._clients: dict[InstanceName, tuple[str, triton_aio.InferenceServerClient]] = {}
        self._recovering: set[Key] = set()
        self.background = Background()

    @property
    def tick_s(self) -> float:
        """How often :meth:`step` runs: a fraction of the interval, so a due probe waits
        little beyond its jittered time."""
        return min(1.0, max(0.05, self.options.interval_s / 10))

    # -- hooks ----------------------------------------------------------------------------
    def observation(self, obs: Observation) -> None:
        """The recorder's hook (hot path): a real request a replica answered well."""
        if obs.outcome == "OK" and obs.instance is not None:
            self.schedule.served((obs.instance, obs.model), self.clock())

    def wire(self, rt: InstanceRuntime) -> None:
        """Keep each load's converged probe latency (the latency rule's yardstick)."""
        assert rt.manager is not None

        async def loaded(model: ModelName, load_s: float, details: dict[str, Any]) -> None:
            ms = details.get("probe_latency_ms")
            if isinstance(ms, int | float) and ms > 0:
                self.converged[(rt.name, model)] = ms / 1e3
            else:
                self.converged.pop((rt.name, model), None)
        rt.manager.after_load.append(loaded)

    def attached(self, rt: InstanceRuntime) -> None:
        return None

    def detached(self, rt: InstanceRuntime) -> None:
        self.schedule.forget(rt.name)
        for table in (self.converged, self._epoch):
            for key in [k for k in table if k[0] == rt.name]:
                del table[key]
        found = self._clients.pop(rt.name, None)
        if found is not None:
            self.background.spawn(found[1].close())

    async def close(self) -> None:
        await self.background.close()
        for _, client in self._clients.values():
            await client.close()
        self._clients.clear()

    # -- the loop -------------------------------------------------------------------------
    async def step(self) -> None:
        """Probe the replicas whose time came; start recovering unhealthy ones whose
        back-off ended."""
        now = self.clock()
        due: list[tuple[InstanceRuntime, ModelName]] = []
        for rt in self.fleet.order:
            if not rt.routable or rt.manager is None or rt.probe is None:
                continue  # the down path owns a dead Triton; a joining one is not routed to
            for model in list(rt.unhealthy):
                key = (rt.name, model)
                if key not in self._recovering and self.schedule.reload_due(key, now):
                    self._recovering.add(key)
                    self.background.spawn(self._recover(rt, model))
            for model in rt.manager.ready_names():
                if model in rt.unhealthy or model in rt.leaving:
                    continue
                if self.schedule.should_probe((rt.name, model), now) \
                        and not rt.manager.status(model).busy:
                    due.append((rt, model))
        results = await asyncio.gather(*(self._probe(rt, m) for rt, m in due),
                                       return_exceptions=True)
        for (rt, model), reason in zip(due, results, strict=True):
            if isinstance(reason, BaseException):
                if not isinstance(reason, Exception):
                    raise reason  # cancelled: the loop stops
                # our own trouble (a store call, a client), not the replica's verdict
                log.warning("health probe of %s on %s: %s", model, rt.name, reason)
            elif reason is not None and rt.manager is not None and rt.manager.ready_now(model):
                await self._mark(rt, model, reason)

    async def _probe(self, rt: InstanceRuntime, model: ModelName) -> str | None:
        """One probe of one replica: why it is unhealthy, or None (passed, or no probe)."""
        assert rt.instance is not None and rt.probe is not None
        try:
            request = health_request(rt.probe.preparer, self.fleet.repository.spec(model))
        except ControlPlaneError as exc:
            log.debug("no health probe for %s: %s", model, exc)
            return None
        if isinstance(request, str):
            return None  # the load-time probes may not touch it either
        before = await self._executions(rt, model)
        # the active version: a rollout's target is not the replica's health (it has its
        # own verification), and Triton would answer an unversioned probe with it
        result = await send(self._client(rt), model, request, self.options.timeout_s,
                            self.version_of(model) or "")
        await self._not_traffic(rt, model, before, result)
        if (result.unreachable or result.status == "DEADLINE_EXCEEDED") \
                and rt.supervisor is not None:
            rt.supervisor.poke()  # its liveness probe decides whether Triton is down
        return verdict(result, self.converged.get((rt.name, model)), self.options)

    async def _executions(self, rt: InstanceRuntime, model: ModelName) -> int | None:
        """Store what traffic executed so far, then count Triton's executions (None: no
        batch statistics kept here)."""
        assert rt.instance is not None
        if rt.batch_stats is None:
            return None
        try:
            await rt.batch_stats.collect(model)
            return sum(executions_by_batch(
                await rt.instance.client.statistics(model)).values())
        except ControlPlaneError:
            return None

    async def _not_traffic(self, rt: InstanceRuntime, model: ModelName, before: int | None,
                           result: ProbeResult) -> None:
        """A probe is never traffic: the batch statistics' baseline takes its execution in."""
        if rt.batch_stats is None or before is None:
            return
        try:
            await rt.batch_stats.reset(model, expected=before + (result.latency_s is not None))
        except ControlPlaneError:
            rt.batch_stats.forget(model)

    def _client(self, rt: InstanceRuntime) -> triton_aio.InferenceServerClient:
        """A gRPC client of the replica's Triton, opened afresh after a restart."""
        assert rt.instance is not None
        url = f"{rt.instance.grpc_url}#{rt.epoch}"
        found = self._clients.get(rt.name)
        if found is not None and found[0] == url:
            return found[1]
        if found is not None:
            self.background.spawn(found[1].close())
        client = triton_aio.InferenceServerClient(rt.instance.grpc_url)
        self._clients[rt.name] = (url, client)
        return client

    # -- unhealthy and back ---------------------------------------------------------------
    async def _mark(self, rt: InstanceRuntime, model: ModelName, reason: str) -> None:
        key = (rt.name, model)
        rt.unhealthy[model] = reason
        self._epoch[key] = rt.epoch
        self.schedule.failed(key, self.clock())
        log.warning("replica of %s on %s is unhealthy, out of routing: %s",
                    model, rt.name, reason)
        self.fleet.record("health", model, rt.name, reason, "unhealthy")
        await self.fleet.publish()  # gateway workers route by a table without it

    async def _recover(self, rt: InstanceRuntime, model: ModelName) -> None:
        key = (rt.name, model)
        try:
            reason = await self._reload_and_probe(rt, model)
        except Exception as exc:  # the next back-off step tries again
            reason = f"reload failed: {exc}"
        finally:
            self._recovering.discard(key)
        now = self.clock()
        if model not in rt.unhealthy:
            self.schedule.recovered(key, now)  # the replica went away meanwhile
            return
        if reason is None:
            del rt.unhealthy[model]
            self.schedule.recovered(key, now)
            log.info("replica of %s on %s passed its health probe: back in routing",
                     model, rt.name)
            self.fleet.record("health", model, rt.name, "health probe passed", "recovered")
            await self.fleet.publish()
            return
        rt.unhealthy[model] = reason
        self.schedule.failed(key, now)
        log.warning("replica of %s on %s still unhealthy (next reload in %.0fs): %s",
                    model, rt.name, self.schedule.retry_in(key, now) or 0.0, reason)

    async def _reload_and_probe(self, rt: InstanceRuntime, model: ModelName) -> str | None:
        """Unload and load the replica again (unless its Triton restarted since: that load
        is fresh), then probe it. Why it is still unhealthy, or None."""
        manager = rt.manager
        assert manager is not None
        state = manager.state(model)
        if state is ModelState.COLD and not manager.status(model).busy:
            rt.unhealthy.pop(model, None)  # unloaded meanwhile: nothing left to route to
            return None
        key = (rt.name, model)
        if not self.fleet.leads():  # a follower replica: the leader reloads; probe again
            return await self._probe(rt, model)
        if state is ModelState.READY:
            if self._epoch.get(key) == rt.epoch:
                # the replica plan's trigger: nothing to make room for, it was resident
                await manager.unload(model, trigger=REPLICA_TRIGGER, force=True)
            self._epoch[key] = rt.epoch  # after a restart the load was fresh: probe first
        await manager.load(model, trigger=REPLICA_TRIGGER)
        return await self._probe(rt, model)
