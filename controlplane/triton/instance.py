"""One Triton instance: its client, its metrics, and -- when embedded -- its process.

It is the lifecycle's adapter to Triton: it satisfies
:class:`controlplane.lifecycle.port.TritonPort` (structurally), mostly by handing calls to its
client.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from controlplane.config import SupervisionSettings
from controlplane.errors import ControlPlaneError, TritonUnavailable
from controlplane.loops import Loops
from controlplane.triton.client import IndexEntry, TritonClient
from controlplane.triton.metrics import ModelFootprint, PluginMetrics
from controlplane.triton.process import TritonProcess
from controlplane.triton.supervisor import Probe, TritonSupervisor
from controlplane.types import InstanceName, ModelConfigJson, ModelFiles, ModelName

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
    #: ``http://host:port`` of its HTTP endpoint (the gateway's HTTP door forwards there)
    http_url: str | None = None
    _probe_clients: list[TritonClient] = field(default_factory=list)

    @property
    def grpc_url(self) -> str:
        return self.client.url

    # -- the lifecycle's port (controlplane/lifecycle/port.py) ------------------------------
    @property
    def load_timeout_s(self) -> float:
        return self.client.load_timeout_s

    async def index(self) -> list[IndexEntry]:
        return await self.client.index()

    async def load(self, model: ModelName, *, config: ModelConfigJson | None = None,
                   files: ModelFiles | None = None, timeout_s: float | None = None) -> None:
        await self.client.load(model, config=config, files=files, timeout_s=timeout_s)

    async def unload(self, model: ModelName) -> None:
        await self.client.unload(model)

    async def model_config(self, model: ModelName) -> ModelConfigJson:
        return await self.client.model_config(model)

    async def footprint(self, model: ModelName) -> ModelFootprint | None:
        """Our plugin's figures for ``model``; None without plugin metrics or figures for it
        (TritonUnavailable when the metrics endpoint cannot be read)."""
        if self.metrics is None:
            return None
        return (await self.metrics.footprints()).get(model)

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
