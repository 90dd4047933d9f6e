"""``GET /metrics``: warmctl's Prometheus exposition (``warmctl_`` prefix).

Nothing here runs per request. Counters come from the recorder's flushes and the lifecycle's
records (``feeds.py``); gauges are read from the parts' state when Prometheus scrapes.
Per-instance figures are collected for every Triton instance of the fleet and labelled
``triton_instance``; figures of the whole control plane have no such label (``families.py``
says why).

One registry per control plane (not prometheus-client's global one): tests and benchmarks
run several in one process. A scrape snapshots the loop-owned figures on the event loop,
then formats them in a worker thread (the formatting is most of a scrape's cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from controlplane.observability.families import (
    GatewayFigures,
    InstanceFigures,
    Snapshot,
    StoreFigures,
    families,
)
from controlplane.observability.feeds import LoadEventFeed, TrafficCounts
from controlplane.observability.status import StatusView, build_status

if TYPE_CHECKING:
    from controlplane.app import ControlPlane
    from controlplane.fleet.runtime import InstanceRuntime
    from controlplane.triton.supervisor import TritonSupervisor

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


class Metrics:
    """Feeds and a collector for one control plane; :meth:`render` answers a scrape."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.traffic = TrafficCounts()
        #: per instance, in the fleet's order
        self.events = {rt.name: LoadEventFeed(cp.database, rt.store_key)
                       for rt in cp.fleet.order}
        self.tritons = {rt.name: TritonWatch(rt.supervisor) for rt in cp.fleet.order}
        self.actions: dict[tuple[str, str], int] = {}
        self._last_action: object | None = None
        self.fleet_actions: dict[tuple[str, str, str], int] = {}
        self._last_fleet_action: object | None = None
        self._snapshot: Snapshot | None = None
        #: per instance, the lifecycle-record refresh in flight (see ``_refresh``)
        self._refreshing: dict[str, asyncio.Future[int]] = {}
        self._lock = asyncio.Lock()  # one scrape at a time owns ``_snapshot``
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def attach(self) -> None:
        """Count from now on (called once the parts are built; one quick database read),
        for each instance of the fleet now and each one that joins later."""
        if self.cp.recorder is not None:
            self.cp.recorder.listeners.append(self.traffic.on_flush)
        for rt in self.cp.fleet.order:
            self.attached(rt)
        self.cp.fleet.membership_listeners.append(self)

    def attached(self, rt: InstanceRuntime) -> None:
        """A membership listener: per-instance feeds for an instance that joined."""
        if rt.supervisor is not None:
            self.tritons[rt.name] = watch = TritonWatch(rt.supervisor)
            rt.supervisor.listeners.append(watch)
        feed = self.events.get(rt.name)
        if feed is None:
            feed = self.events[rt.name] = LoadEventFeed(self.cp.database, rt.store_key)
        feed.start()

    def detached(self, rt: InstanceRuntime) -> None:
        """A retired instance's series go (Prometheus marks them stale)."""
        self.events.pop(rt.name, None)
        self.tritons.pop(rt.name, None)

    async def render(self) -> bytes:
        """The exposition text: refresh what needs the database or the policy, snapshot on
        the loop, format in a thread."""
        async with self._lock:
            for name, feed in self.events.items():
                await self._refresh(name, feed)
            self._count_actions()
            self._count_fleet_actions()
            status = await build_status(self.cp, minutes=1, history=False)
            self._snapshot = self._take(status)
            return await asyncio.to_thread(generate_latest, self.registry)

    async def _refresh(self, name: str, feed: LoadEventFeed) -> None:
        """Count new lifecycle records, waiting for the store at most its call bound: a
        failing or stalled store leaves the counters as they were and the scrape answers.
        One refresh per feed at a time (one stuck on a stalled disk is not doubled)."""
        running = self._refreshing.get(name)
        if running is not None and not running.done():
            return
        task = asyncio.ensure_future(self.cp.database.run(feed.refresh))
        task.add_done_callback(_retrieve)
        self._refreshing[name] = task
        with contextlib.suppress(Exception):  # logged by _retrieve; the scrape goes on
            await asyncio.wait_for(asyncio.shield(task), self.cp.database.call_timeout_s)

    def _take(self, status: StatusView) -> Snapshot:
        cp, t = self.cp, self.traffic
        rec, gw = cp.recorder, cp.gateway
        writes = cp.database.writes
        store = StoreFigures(
            state=cp.store_health.status().state, queued=dict(writes.queued_weight),
            written=dict(writes.written),
            dropped={key: n for key, n in writes.dropped.items()})
        return Snapshot(
            requests=dict(t.requests), cold_starts=dict(t.cold_starts),
            waits={k: h.copy() for k, h in t.waits.items()},
            recorder=None if rec is None else (rec.held, dict(rec.dropped_by), rec.written,
                                               rec.unknown_models),
            actions=dict(self.actions),
            gateway=None if gw is None else GatewayFigures(
                gw.in_flight, gw.open_streams, gw.buffered.held, dict(gw.buffered.refused),
                tuple(sorted(cp.crashes.quarantined)),
                None if cp.workers is None else cp.workers.figures()),
            instances=[self._figures(rt) for rt in cp.fleet.order
                       if rt.name in self.events and rt.name in self.tritons],
            fleet_actions=dict(self.fleet_actions), status=status, store=store)

    def _figures(self, rt: InstanceRuntime) -> InstanceFigures:
        e, watch, inst = self.events[rt.name], self.tritons[rt.name], rt.instance
        return InstanceFigures(
            name=rt.name, events=dict(e.events),
            durations={k: h.copy() for k, h in e.durations.items()},
            phases={k: h.copy() for k, h in e.phases.items()},
            triton_up=rt.supervisor is not None and rt.supervisor.serving,
            restarts=watch.restarts, outages=watch.outages,
            triton_info=None if inst is None else {
                "grpc_url": inst.grpc_url,
                "metrics_url": inst.metrics.url if inst.metrics else ""},
            outstanding=rt.outstanding, draining=rt.draining, state=rt.state.value,
            sequences=self.cp.fleet.sequences.open_on(rt.name),
            requests=0 if rt.upstream is None else rt.upstream.requests,
            probes=dict(e.probes), unhealthy=dict(rt.unhealthy))

    def _count_actions(self) -> None:
        """New scheduler action records since the last scrape."""
        sched = self.cp.scheduler
        if sched is None:
            return
        self._last_action = count_new(sched.state.actions, self._last_action, self.actions,
                                      lambda r: (r.kind, r.outcome))

    def _count_fleet_actions(self) -> None:
        self._last_fleet_action = count_new(
            list(self.cp.fleet.actions), self._last_fleet_action, self.fleet_actions,
            lambda a: (a.instance, a.kind, a.outcome))


def _retrieve(task: asyncio.Future[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("lifecycle counters not refreshed: the store failed: %s", task.exception())


def count_new(records: Sequence[R], last: object | None, counts: dict[K, int],
              key: Callable[[R], K]) -> object | None:
    """Count the records after ``last`` into ``counts``; returns the new ``last``. Both
    lists keep only their newest entries and every record is a new object, so the last one
    counted marks where to resume (None, or gone from the list: count them all)."""
    start = 0
    for i in range(len(records) - 1, -1, -1):
        if records[i] is last:
            start = i + 1
            break
    for record in records[start:]:
        k = key(record)
        counts[k] = counts.get(k, 0) + 1
    return records[-1] if records else last


class TritonWatch:
    """A supervisor listener: counts outages, and restarts (a new process id on return)."""

    def __init__(self, supervisor: TritonSupervisor | None) -> None:
        self.supervisor = supervisor
        self.outages = 0
        self.restarts = 0
        self._pid = self._current_pid()

    def _current_pid(self) -> int | None:
        process = self.supervisor.process if self.supervisor is not None else None
        return process.pid if process is not None else None

    async def triton_down(self, reason: str) -> None:
        self.outages += 1

    async def triton_up(self) -> None:
        pid = self._current_pid()
        if pid != self._pid:
            self.restarts += 1
            self._pid = pid


class _Collector:
    """Reads the last snapshot only (it runs in a worker thread)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self.m._snapshot is not None:
            yield from families(self.m._snapshot)
