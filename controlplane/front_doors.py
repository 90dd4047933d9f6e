"""The inference gateway's front doors: gRPC and HTTP in this process, or (``gateway.workers``
> 1) in worker processes on the public ports with this process's gateway on loopback behind
them (``gateway/workers/``). The doors only convert; the gateway behind them serves.

Started after the gateway is built (build, then start) and stopped in the order requests flow
back: workers first (they forward to the gateway), then the HTTP door, then the gRPC door,
each draining its in-flight requests for ``gateway.grace_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controlplane.admin.auth import gateway_guard
from controlplane.config import Settings
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.replicas import FleetReplicas
from controlplane.gateway.rest import RestGateway
from controlplane.gateway.server import Gateway
from controlplane.gateway.workers.start import claim_port, worker_config, worker_count
from controlplane.gateway.workers.supervisor import GatewayWorkers
from controlplane.stopping import bounded
from controlplane.traffic.recorder import TrafficRecorder

log = logging.getLogger(__name__)


class FrontDoors:
    """Where clients reach the gateway; ``grpc_port``/``http_port`` are the public ports
    (None before :meth:`start`, and ``http_port`` when the HTTP door is off)."""

    def __init__(self, settings: Settings, fleet: Fleet) -> None:
        self.settings, self.fleet = settings, fleet
        self.gateway: Gateway | None = None
        self.rest: RestGateway | None = None
        #: the worker processes (``gateway.workers`` > 1)
        self.workers: GatewayWorkers | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None

    @property
    def grpc_url(self) -> str | None:
        """``host:port`` of the gRPC door (what ``tritonclient.grpc`` takes)."""
        if self.grpc_port is None:
            return None
        return f"{self.settings.gateway.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of the HTTP door; None when it is off."""
        if self.http_port is None:
            return None
        return f"http://{self.settings.gateway.host}:{self.http_port}"

    async def start(self, recorder: TrafficRecorder | None, ready: Callable[[], bool],
                    upstream_error: Callable[[str, str, str, str], None]) -> None:
        """Build the gateway over the fleet and open its doors. ``ready``: whether the
        control plane serves yet; ``upstream_error``: told of every request Triton failed
        (instance, model, gRPC status name, message). Raises ConfigError when a public port
        is taken."""
        s = self.settings.gateway
        self.gateway = gateway = Gateway(
            models=self.fleet, recorder=recorder, default_deadline_s=s.default_deadline_s,
            call_timeout_s=self.settings.triton.call_timeout_s,
            allow_repository_control=s.allow_repository_control, ready=ready,
            upstream_error=upstream_error, max_request_bytes=s.max_request_bytes,
            max_buffered_bytes=s.max_buffered_bytes, expose_tracebacks=s.expose_tracebacks,
            guard=gateway_guard(self.settings))
        count = worker_count(s.workers)
        if count == 1:
            self.grpc_port = await gateway.start(s.host, s.port)
            log.info("inference gateway on %s:%d", s.host, self.grpc_port)
            if s.http_enabled:
                self.rest = RestGateway(gateway)
                self.http_port = await self.rest.start(s.host, s.http_port)
                log.info("inference gateway (HTTP) on http://%s:%d", s.host, self.http_port)
            return
        # the public ports are claimed first, so a taken one fails the start before anything
        # is spawned (the workers bind them with SO_REUSEPORT)
        grpc_port = claim_port(s.host, s.port, "gateway.port")
        http_port = claim_port(s.host, s.http_port, "gateway.http_port") \
            if s.http_enabled else None
        assert isinstance(gateway.replicas, FleetReplicas)
        internal = await gateway.start("127.0.0.1", 0)
        internal_http = None
        if s.http_enabled:
            self.rest = RestGateway(gateway)
            internal_http = f"http://127.0.0.1:{await self.rest.start('127.0.0.1', 0)}"
        settings = self.settings
        self.workers = GatewayWorkers(
            count, lambda i: worker_config(
                settings, i, count, grpc_port, http_port, f"127.0.0.1:{internal}",
                internal_http, gateway.buffered.max_buffered_bytes),
            self.fleet, gateway.replicas, recorder)
        self.fleet.publish = self.workers.publish
        await self.workers.start()
        self.grpc_port, self.http_port = grpc_port, http_port
        log.info("inference gateway: %d worker processes on %s:%d (gRPC)%s", count,
                 s.host, grpc_port, f" and :{http_port} (HTTP)" if http_port is not None else "")

    async def stop(self) -> None:
        """Close every door, each draining for ``gateway.grace_s`` (bounded)."""
        grace = self.settings.gateway.grace_s
        if self.workers is not None:  # first: they forward to the gateway below
            await bounded("the gateway workers", self.workers.stop(grace), grace + 20)
        if self.rest is not None:
            await bounded("the HTTP door", self.rest.stop(grace), grace + 10)
        if self.gateway is not None:
            await bounded("the gRPC door", self.gateway.stop(grace), grace + 10)
