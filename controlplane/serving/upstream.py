"""The gateway's way to one Triton instance: a channel, its unary calls and its streams.

Requests travel as raw bytes (the gateway registers bytes (de)serializers), so one channel
per instance carries every model's traffic. ``outstanding`` counts requests in flight on it:
the router balances on it and a drain waits for it to reach zero; ``by_model`` counts them per
model, so a replica leaving (trim, drain, eviction) is unloaded only once nothing is in flight
on it, and a crash can be traced to the models whose requests were in Triton at the time.
"""

from __future__ import annotations

from typing import Any

import grpc

from controlplane.triton.client import CHANNEL_OPTIONS

SERVICE = "inference.GRPCInferenceService"
#: unary methods the gateway forwards as they are
UNARY = ("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig", "ServerMetadata",
         "ServerLive", "ModelStatistics", "RepositoryIndex", "SystemSharedMemoryStatus",
         "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
         "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
         "TraceSetting", "LogSettings")


class Upstream:
    """Calls to one Triton's ``GRPCInferenceService``; open after :meth:`open`."""

    def __init__(self, instance: str, url: str) -> None:
        self.instance = instance
        self.url = url
        #: requests and open streams in flight on this instance (plain int: loop-owned)
        self.outstanding = 0
        #: the same per model (entries stay at 0 rather than being deleted: no churn)
        self.by_model: dict[str, int] = {}
        #: inference requests sent to this instance since start (``/metrics``)
        self.requests = 0
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}
        self._stream: Any = None

    def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.url, options=CHANNEL_OPTIONS)
        self._calls = {name: self._channel.unary_unary(f"/{SERVICE}/{name}") for name in UNARY}
        self._stream = self._channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")

    def begin(self, model: str) -> None:
        """A request or stream for ``model`` goes out on this instance (the hot path)."""
        self.outstanding += 1
        self.by_model[model] = self.by_model.get(model, 0) + 1

    def end(self, model: str) -> None:
        self.outstanding -= 1
        self.by_model[model] -= 1

    def in_flight(self, model: str) -> int:
        return self.by_model.get(model, 0)

    def call(self, method: str) -> Any:
        """The unary multi-callable for ``method`` (a name of :data:`UNARY`)."""
        return self._calls[method]

    def open_stream(self, metadata: tuple[tuple[str, str], ...] | None) -> Any:
        """A new ModelStreamInfer call to this Triton."""
        return self._stream(metadata=metadata)

    async def reopen(self) -> None:
        """After its Triton restarted: a new channel (the old one waits out gRPC's reconnect
        back-off, seconds after a restart, failing calls meanwhile)."""
        old = self._channel
        self.open()
        if old is not None:
            await old.close(grace=None)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
