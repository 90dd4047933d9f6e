"""``GET /metrics``: warmctl's Prometheus exposition (``warmctl_`` prefix).

Nothing here runs per request. Counters come from the recorder's flushes and the lifecycle's
records (``feeds.py``); gauges are read from the parts' state when Prometheus scrapes. Every
family carries an ``instance`` label (the Triton instance), ready for several of them.

One registry per control plane (not prometheus-client's global one): tests and benchmarks
run several in one process. A scrape snapshots the loop-owned figures on the event loop,
then formats them in a worker thread (the formatting is most of a scrape's cost).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from controlplane.observability.families import Snapshot, families
from controlplane.observability.feeds import LoadEventFeed, TrafficCounts
from controlplane.observability.status import StatusView, build_status

if TYPE_CHECKING:
    from controlplane.app import ControlPlane
    from controlplane.triton.supervisor import TritonSupervisor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Feeds and a collector for one control plane; :meth:`render` answers a scrape."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.instance = cp.instance.name if cp.instance is not None else \
            cp.settings.instance_name
        self.traffic = TrafficCounts()
        self.events = LoadEventFeed(cp.database, self.instance)
        self.actions: dict[tuple[str, str], int] = {}
        self._last_action: object | None = None
        self.triton = TritonWatch(cp.supervisor)
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()  # one scrape at a time owns ``_snapshot``
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def attach(self) -> None:
        """Count from now on (called once the parts are built; one quick database read)."""
        if self.cp.recorder is not None:
            self.cp.recorder.listeners.append(self.traffic.on_flush)
        if self.cp.supervisor is not None:
            self.triton = TritonWatch(self.cp.supervisor)
            self.cp.supervisor.listeners.append(self.triton)
        self.events.start()

    async def render(self) -> bytes:
        """The exposition text: refresh what needs the database or the policy, snapshot on
        the loop, format in a thread."""
        async with self._lock:
            await self.cp.database.run(self.events.refresh)
            self._count_actions()
            status = await build_status(self.cp, minutes=1, history=False)
            self._snapshot = self._take(status)
            return await asyncio.to_thread(generate_latest, self.registry)

    def _take(self, status: StatusView) -> Snapshot:
        cp, t, e = self.cp, self.traffic, self.events
        rec, gw, inst = cp.recorder, cp.gateway, cp.instance
        return Snapshot(
            requests=dict(t.requests), cold_starts=dict(t.cold_starts),
            waits={k: h.copy() for k, h in t.waits.items()},
            recorder=None if rec is None else (len(rec._buffer), rec.dropped, rec.written,
                                               rec.unknown_models),
            events=dict(e.events), durations={k: h.copy() for k, h in e.durations.items()},
            phases={k: h.copy() for k, h in e.phases.items()}, actions=dict(self.actions),
            gateway=None if gw is None else (gw.in_flight, gw.open_streams),
            triton_up=cp.supervisor is not None and cp.supervisor.serving,
            restarts=self.triton.restarts, outages=self.triton.outages,
            triton_info=None if inst is None else {
                "grpc_url": inst.grpc_url,
                "metrics_url": inst.metrics.url if inst.metrics else ""},
            status=status)

    def _count_actions(self) -> None:
        """New scheduler action records since the last scrape (the list keeps the last 200;
        records are new objects, so the last one counted marks where to resume)."""
        sched = self.cp.scheduler
        if sched is None:
            return
        records = sched.state.actions
        start = 0
        for i in range(len(records) - 1, -1, -1):
            if records[i] is self._last_action:
                start = i + 1
                break
        for record in records[start:]:
            key = (record.kind, record.outcome)
            self.actions[key] = self.actions.get(key, 0) + 1
        if records:
            self._last_action = records[-1]


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
            yield from families(self.m._snapshot, self.m.instance)
