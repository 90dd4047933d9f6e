"""A gateway worker's main: ``python -m controlplane.gateway.workers.process <fd>``.

Started by the control process (``supervisor.py``) with one end of a Unix socket pair as
``fd``. It reads its :class:`WorkerConfig`, listens on the shared public ports (SO_REUSEPORT:
the kernel spreads new connections over the workers), tells the control process it is up,
then routes by the tables pushed to it and reports every ``report_interval_s``. It stops on
``("stop",)``, on SIGTERM, or when the pipe ends (the control process is gone: no orphan
keeps the port): it stops listening, lets in-flight requests finish (``grace_s``), sends its
last report and exits. SIGINT is ignored: a terminal's Ctrl-C reaches the whole process group,
and the control process stops its workers in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from controlplane.gateway.guard import Guard
from controlplane.gateway.rest import RestGateway
from controlplane.gateway.server import Gateway
from controlplane.gateway.workers import protocol
from controlplane.gateway.workers.forward import ForwardedRest, ForwardedServerWide
from controlplane.gateway.workers.link import ControlLink, WorkerObservations, report_every
from controlplane.gateway.workers.protocol import Report, WorkerConfig
from controlplane.gateway.workers.replicas import TableReplicas

log = logging.getLogger("controlplane.gateway.worker")
#: how long in-flight requests get to finish when the worker stops
GRACE_S = 5.0


class Worker:
    def __init__(self, config: WorkerConfig, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.config = config
        self.reader, self.writer = reader, writer
        self.link = ControlLink(writer)
        self.replicas = TableReplicas(self.link)
        self.observations = WorkerObservations(config)
        self.server_wide = ForwardedServerWide(config.internal_grpc, config.forward_timeout_s)
        self.gateway = Gateway(
            models=None, recorder=self.observations, replicas=self.replicas,
            server_wide=self.server_wide, default_deadline_s=config.default_deadline_s,
            call_timeout_s=config.forward_timeout_s,
            max_request_bytes=config.max_request_bytes,
            max_buffered_bytes=config.max_buffered_bytes,
            expose_tracebacks=config.expose_tracebacks, guard=Guard())
        self.rest_routes = ForwardedRest(config.internal_http, config.forward_timeout_s) \
            if config.internal_http else None
        self.rest = RestGateway(self.gateway, self.rest_routes) if self.rest_routes else None
        self.stopping = asyncio.Event()
        self._last: tuple[object, ...] | None = None

    async def serve(self) -> None:
        c = self.config
        await self.gateway.start(c.host, c.grpc_port, reuse_port=True)
        if self.rest is not None and c.http_port is not None:
            await self.rest.start(c.host, c.http_port, reuse_port=True)
        self.link.send(("hello", os.getpid()))
        reading = asyncio.create_task(self._read())
        reporting = asyncio.create_task(report_every(c.report_interval_s, self._report,
                                                     self.link))
        try:
            await self.stopping.wait()
        finally:
            if self.rest is not None:
                await self.rest.stop(GRACE_S)
            await self.gateway.stop(GRACE_S)
            reporting.cancel()
            final = self._report(force=True)
            if final is not None and not self.link.closed:
                self.link.send(("report", final))
                with contextlib.suppress(ConnectionError):
                    await self.writer.drain()
            reading.cancel()
            self.writer.close()
            await self.replicas.close()
            await self.server_wide.close()
            if self.rest_routes is not None:
                await self.rest_routes.close()

    async def _read(self) -> None:
        try:
            while True:
                message = await protocol.read(self.reader)
                kind = message[0]
                if kind == "table":
                    self.replicas.apply(message[1])
                elif kind == "ready":
                    self.link.answered(message[1], message[2])
                elif kind == "stop":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.link.lost()
        self.stopping.set()

    def _report(self, force: bool = False) -> Report | None:
        in_flight = self.replicas.in_flight()
        sequences = self.replicas.sequences.count_open()
        state = (self.replicas.table.version, in_flight, sequences)
        if not force and state == self._last and not self.observations.pending \
                and not self.observations.dropped:
            return None
        self._last = state
        report = Report(self.replicas.table.version, in_flight, sequences)
        self.observations.take(report)
        return report


async def run(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    kind, config = await protocol.read(reader)
    assert kind == "config" and isinstance(config, WorkerConfig)
    logging.basicConfig(level=config.log_level,
                        format=f"%(asctime)s worker-{config.index} %(levelname)s %(name)s: "
                               "%(message)s")
    worker = Worker(config, reader, writer)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stopping.set)
    await worker.serve()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvloop  # the loop `warmctl serve` runs the gateway on

    uvloop.run(run(int(sys.argv[1])))


if __name__ == "__main__":
    main()
