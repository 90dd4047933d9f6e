"""One Triton instance: its client, its metrics, and -- when embedded -- its process."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from controlplane.compile_cache.store import CompileCacheStore
from controlplane.config import Settings, SupervisionSettings
from controlplane.errors import ControlPlaneError, TritonUnavailable
from controlplane.loops import Loops
from controlplane.triton.client import TritonClient
from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.metrics import PluginMetrics
from controlplane.triton.process import TritonProcess
from controlplane.triton.supervisor import Probe, TritonSupervisor
from controlplane.types import InstanceName

log = logging.getLogger(__name__)


@dataclass
class TritonInstance:
    name: InstanceName
    client: TritonClient
    metrics: PluginMetrics | None
    #: None when the server is external (docker compose, production)
    process: TritonProcess | None = None
    #: watches it after start-up (see ``supervise``)
    supervisor: TritonSupervisor | None = None
    _probe_clients: list[TritonClient] = field(default_factory=list)

    @property
    def grpc_url(self) -> str:
        return self.client.url

    @classmethod
    async def from_settings(cls, settings: Settings) -> TritonInstance:
        """Attach to ``settings.triton.url`` if set, else start the embedded tritonserver.

        Starting spawns the process from the event loop's thread, which must outlive it.
        """
        t = settings.triton
        process = None
        if t.url:
            url, metrics_url = t.url, t.metrics_url
        else:
            distribution = TritonDistribution.locate(t.binary)
            compile_cache = CompileCacheStore.from_settings(settings)
            backend_dir = distribution.assemble_backend_dir(
                settings.backends_dir, settings.data_dir / "backends")
            process = TritonProcess(
                distribution=distribution,
                model_repository=settings.model_repository,
                backend_dir=backend_dir,
                log_path=settings.data_dir / "triton.log",
                host=t.host,
                grpc_port=t.grpc_port,
                http_port=t.http_port,
                metrics_port=t.metrics_port,
                startup_timeout_s=t.startup_timeout_s,
                stop_timeout_s=t.stop_timeout_s,
                disable_auto_complete_config=t.disable_auto_complete_config,
                extra_args=t.extra_args,
                env=compile_cache.environment() if compile_cache else {},
            )
            await process.launch()
            url, metrics_url = process.grpc_url, process.metrics_url
        client = TritonClient(url, call_timeout_s=t.call_timeout_s,
                              load_timeout_s=t.load_timeout_s,
                              unload_timeout_s=t.unload_timeout_s)
        instance = cls(settings.instance_name, client,
                       PluginMetrics(metrics_url) if metrics_url else None, process)
        if process is None:
            await instance.wait_live(t.startup_timeout_s)
        return instance

    def failure_detail(self, model: str) -> str | None:
        """Triton's own explanation of a failed load, where only its log has it.

        A config Triton rejects answers the load with just "failed to poll from model
        repository"; the reason is logged. Only the embedded server's log is readable here.
        """
        if self.process is None:
            return None
        lines = self.process.error_lines(f"'{model}'")
        return lines[-1] if lines else None

    async def wait_live(self, timeout_s: float) -> None:
        """Wait for an external Triton to answer (compose starts both services together)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        problem = "not live"
        while loop.time() < deadline:
            try:
                if await self.client.is_live():
                    return
            except TritonUnavailable as exc:
                problem = str(exc)
            await asyncio.sleep(0.5)
        raise TritonUnavailable(f"Triton at {self.grpc_url} not live after {timeout_s:g}s: "
                                f"{problem}")

    def liveness_probe(self, timeout_s: float) -> Probe:
        """A liveness check answering within ``timeout_s``, on a channel of its own so that
        it never queues behind large requests on the shared one."""
        client = TritonClient(self.grpc_url, call_timeout_s=timeout_s)
        self._probe_clients.append(client)
        return client.is_live

    def supervise(self, options: SupervisionSettings, loops: Loops) -> TritonSupervisor:
        """Watch this Triton from now on (call ``start`` on the result once its listeners
        are in place)."""
        self.supervisor = TritonSupervisor(
            options=options, probe=self.liveness_probe(options.probe_timeout_s),
            process=self.process, loops=loops)
        self.supervisor.on_restart.append(self.reconnect)
        return self.supervisor

    async def reconnect(self, timeout_s: float = 30.0) -> None:
        """After a restart: new channels, and wait until ours reaches the new server.

        gRPC shares one connection per address among channels with the same arguments; the
        one that failed while Triton was down waits out its reconnect back-off (seconds,
        growing) and fails calls meanwhile -- a restore must not fail on that.
        """
        for client in (self.client, *self._probe_clients):
            await client.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                if await self.client.is_live():
                    return
            except ControlPlaneError:
                pass
            await asyncio.sleep(0.1)
        log.warning("Triton at %s restarted but not reachable after %gs", self.grpc_url,
                    timeout_s)

    async def close(self) -> None:
        if self.supervisor is not None:  # first: the stop below is no crash
            await self.supervisor.close()
        for probe in self._probe_clients:
            await probe.close()
        await self.client.close()
        if self.process is not None:
            code = await asyncio.to_thread(self.process.stop)
            log.info("tritonserver stopped (exit code %s)", code)
