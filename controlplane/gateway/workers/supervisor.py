"""The gateway's worker processes, from the control process: started, fed, heard, replaced.

``start`` launches ``count`` workers (``process.py``), each with one end of its own Unix
socket pair, sends each its config and the current routing table, and returns once every
one listens on the shared ports (or raises ConfigError with why not). Then:

- **tables**: after any model's state change, and every ``PUBLISH_S`` otherwise, a routing
  table is built from the fleet (``fleet/table.py``) and pushed to every worker when it
  differs from the last; :meth:`publish` (the fleet's hook after a replica stops taking
  requests) pushes at once and returns when every worker has reported routing by it, so a
  removal then waits for what the workers still have in flight;
- **loads**: a worker's ``ensure`` is the fleet's lazy load (one per model, whoever asks);
  the latest table is pushed before the answer, so the worker routes the request at once;
- **reports**: in-flight counts and open sequences per (instance, model) are summed over the
  workers into the fleet's counters (``Upstream.remote_by_model``, ``Sequences.elsewhere``):
  drains and trims wait for them; observations go to the traffic recorder, the only writer;
- **supervision**: a worker that exits unexpectedly is replaced (back-off 0.5 s doubling to
  10 s, reset after a minute up) while the others keep the ports; what it had in flight is
  counted as lost records (``recorder_dropped_total{reason="worker_exit"}``). ``status()``
  is what ``/healthz`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.errors import ConfigError, ControlPlaneError
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.replicas import FleetReplicas
from controlplane.fleet.table import routing_table
from controlplane.gateway.workers import protocol
from controlplane.gateway.workers.protocol import Report, WorkerConfig
from controlplane.serving.status import Status
from controlplane.serving.table import RoutingTable
from controlplane.traffic.recorder import TrafficRecorder

log = logging.getLogger(__name__)

#: the table is rebuilt at least this often (weights, drains, cordons have no event)
PUBLISH_S = 0.05
#: how long a worker gets to start listening
START_TIMEOUT_S = 30.0
#: how long :meth:`publish` waits for the workers to route by the new table
ACK_TIMEOUT_S = 2.0


@dataclass
class WorkerHandle:
    index: int
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    pid: int | None = None
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    restarts: int = 0
    acked: int = 0
    in_flight: dict[str, dict[str, int]] = field(default_factory=dict)
    sequences: dict[tuple[str, str], int] = field(default_factory=dict)
    served: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None \
            and self.listening.is_set()


class GatewayWorkers:
    def __init__(self, count: int, config: Callable[[int], WorkerConfig], fleet: Fleet,
                 replicas: FleetReplicas, recorder: TrafficRecorder | None) -> None:
        self.count = count
        self._config = config
        self.fleet = fleet
        self.replicas = replicas
        self.recorder = recorder
        self.workers = [WorkerHandle(i) for i in range(count)]
        self.table = RoutingTable(0)
        self._dirty = asyncio.Event()
        self._acked = asyncio.Condition()
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        for _, manager in self.fleet.managers():
            manager.listeners.append(lambda model, state: self._dirty.set())
        self.table = routing_table(self.fleet, 1)
        await asyncio.gather(*(self._spawn(w) for w in self.workers))
        try:
            await asyncio.wait_for(asyncio.gather(*(w.listening.wait() for w in self.workers)),
                                   START_TIMEOUT_S)
        except TimeoutError:
            down = [w.index for w in self.workers if not w.listening.is_set()]
            await self.stop(0.0)
            raise ConfigError(f"gateway workers {down} did not start listening within "
                              f"{START_TIMEOUT_S:g}s (their log lines say why)") from None
        self._spawn_task(self._publisher())

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _spawn(self, w: WorkerHandle) -> None:
        ours, theirs = socket.socketpair()
        try:
            w.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "controlplane.gateway.workers.process",
                str(theirs.fileno()), pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        w.writer, w.pid, w.started_at, w.acked = writer, w.process.pid, time.monotonic(), 0
        w.listening = asyncio.Event()
        protocol.write(writer, ("config", self._config(w.index)))
        protocol.write(writer, ("table", self.table))
        w.task = self._spawn_task(self._serve(w, reader))

    async def stop(self, grace_s: float) -> None:
        """Stop every worker: they stop listening, finish in-flight requests (their own
        grace), send their last report and exit; killed after ``grace_s`` + 5 s."""
        self._stopping = True
        for w in self.workers:
            if w.writer is not None and not w.writer.is_closing():
                protocol.write(w.writer, ("stop",))
        for w in self.workers:
            if w.process is None:
                continue
            try:
                await asyncio.wait_for(w.process.wait(), grace_s + 5.0)
            except TimeoutError:
                log.warning("gateway worker %d did not stop; killed", w.index)
                w.process.kill()
                await w.process.wait()
        for w in self.workers:  # their last reports are read before the pipes end
            if w.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(w.task, 5.0)
        for task in list(self._tasks):
            task.cancel()

    # -- one worker's pipe ---------------------------------------------------------------
    async def _serve(self, w: WorkerHandle, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await protocol.read(reader)
                kind = message[0]
                if kind == "report":
                    await self._take(w, message[1])
                elif kind == "ensure":
                    self._spawn_task(self._ensure(w, *message[1:]))
                elif kind == "failed":
                    _, instance, model, status, text = message
                    self.replicas.failed(instance, model, Status(status), text)
                elif kind == "hello":
                    w.pid = message[1]
                    w.listening.set()
                    if w.restarts:
                        log.info("gateway worker %d replaced (pid %s): it serves again",
                                 w.index, w.pid)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("gateway worker %d's pipe failed", w.index)
        await self._ended(w)

    async def _ensure(self, w: WorkerHandle, request_id: int, model: str,
                      exclude: tuple[str, ...], budget_s: float) -> None:
        error = None
        log.debug("worker %d asks for %s (budget %.3gs)", w.index, model, budget_s)
        try:
            await self.replicas.wait_ready(model, budget_s, exclude)
        except ControlPlaneError as exc:
            error = protocol.encode_error(exc)
        self._publish_now()
        log.debug("worker %d: %s %s", w.index, model, error or "ready")
        if w.writer is not None and not w.writer.is_closing():
            protocol.write(w.writer, ("ready", request_id, error))

    async def _take(self, w: WorkerHandle, report: Report) -> None:
        w.in_flight, w.sequences, w.served = report.in_flight, report.sequences, report.served
        self._sum()
        if report.table_version > w.acked:
            w.acked = report.table_version
            async with self._acked:
                self._acked.notify_all()
        recorder = self.recorder
        if recorder is not None:
            recorder.dropped_by["worker"] += report.dropped
            for observation in report.observations:
                if observation.payload is not None and not recorder.wants_payload(
                        observation, len(observation.payload[0])):
                    observation = observation._replace(payload=None)
                recorder.record(observation)

    def _sum(self) -> None:
        """The workers' in-flight requests and open sequences into the fleet's counters."""
        for rt in self.fleet.order:
            upstream = rt.upstream
            if upstream is None:
                continue
            by_model: dict[str, int] = {}
            for w in self.workers:
                for model, n in w.in_flight.get(rt.name, {}).items():
                    by_model[model] = by_model.get(model, 0) + n
            upstream.remote_by_model = by_model
            upstream.remote_outstanding = sum(by_model.values())
        elsewhere: dict[tuple[str, str], int] = {}
        for w in self.workers:
            for key, n in w.sequences.items():
                elsewhere[key] = elsewhere.get(key, 0) + n
        self.fleet.sequences.elsewhere = elsewhere

    async def _ended(self, w: WorkerHandle) -> None:
        if w.writer is not None:
            w.writer.close()
            with contextlib.suppress(ConnectionError):
                await w.writer.wait_closed()
        if w.process is not None and w.process.returncode is None and not self._stopping:
            with contextlib.suppress(ProcessLookupError):
                w.process.kill()
        if w.process is not None:
            await w.process.wait()
        lost = sum(sum(models.values()) for models in w.in_flight.values())
        w.in_flight, w.sequences = {}, {}
        self._sum()
        async with self._acked:
            self._acked.notify_all()
        if self._stopping:
            return
        code = w.process.returncode if w.process is not None else None
        if self.recorder is not None and lost:
            self.recorder.dropped_by["worker_exit"] += lost
        up_s = time.monotonic() - w.started_at
        w.restarts += 1
        delay = 0.5 if up_s > 60 else min(0.5 * 2 ** min(w.restarts, 5), 10.0)
        log.warning("gateway worker %d (pid %s) exited with %s after %.1fs, %d in flight; "
                    "replacing it in %.1fs", w.index, w.pid, code, up_s, lost, delay)
        await asyncio.sleep(delay)
        if not self._stopping:
            await self._spawn(w)

    # -- tables --------------------------------------------------------------------------
    async def _publisher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), PUBLISH_S)
            self._dirty.clear()
            self._publish_now()

    def _publish_now(self) -> int:
        """Push the fleet's table if it changed; the version the workers should route by."""
        table = routing_table(self.fleet, self.table.version + 1)
        if table.same_routes(self.table):
            return self.table.version
        self.table = table
        for w in self.workers:
            if w.writer is not None and not w.writer.is_closing():
                protocol.write(w.writer, ("table", table))
        return table.version

    async def publish(self) -> None:
        """Push now; return once every live worker routes by it (or ``ACK_TIMEOUT_S``)."""
        version = self._publish_now()

        def routed() -> bool:
            return all(w.acked >= version for w in self.workers if w.alive)

        async with self._acked:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait_for(routed), ACK_TIMEOUT_S)

    def figures(self) -> tuple[int, int, int]:
        """(configured, alive, replaced since start), for ``/metrics``."""
        return (self.count, sum(1 for w in self.workers if w.alive),
                sum(w.restarts for w in self.workers))

    def status(self) -> dict[str, Any]:
        """For ``/healthz``: each worker's pid, whether it serves, restarts, requests."""
        return {
            "configured": self.count,
            "alive": sum(1 for w in self.workers if w.alive),
            "workers": [{"index": w.index, "pid": w.pid, "alive": w.alive,
                         "restarts": w.restarts, "served": w.served,
                         "in_flight": sum(sum(m.values()) for m in w.in_flight.values())}
                        for w in self.workers],
        }
