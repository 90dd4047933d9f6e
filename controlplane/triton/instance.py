"""One Triton instance: its client, its metrics, and -- when embedded -- its process."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from controlplane.config import Settings
from controlplane.errors import TritonUnavailable
from controlplane.triton.client import TritonClient
from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.metrics import PluginMetrics
from controlplane.triton.process import TritonProcess
from controlplane.types import InstanceName

log = logging.getLogger(__name__)


@dataclass
class TritonInstance:
    name: InstanceName
    client: TritonClient
    metrics: PluginMetrics | None
    #: None when the server is external (docker compose, production)
    process: TritonProcess | None = None

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

    async def close(self) -> None:
        await self.client.close()
        if self.process is not None:
            code = await asyncio.to_thread(self.process.stop)
            log.info("tritonserver stopped (exit code %s)", code)
