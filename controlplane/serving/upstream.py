"""The gateway's way to one Triton instance: a gRPC channel (its unary calls and streams) and
an HTTP connection pool, for the two front doors.

Requests travel as raw bytes (the gRPC door registers bytes (de)serializers; the HTTP door
forwards bodies as they came), so one channel and one pool per instance carry every model's
traffic. ``outstanding`` counts requests in flight on it:
the router balances on it and a drain waits for it to reach zero; ``by_model`` counts them per
model, so a replica leaving (trim, drain, eviction) is unloaded only once nothing is in flight
on it, and a crash can be traced to the models whose requests were in Triton at the time.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc

from controlplane.triton.client import CHANNEL_OPTIONS

SERVICE = "inference.GRPCInferenceService"
#: unary methods the gateway forwards as they are
UNARY = ("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig", "ServerMetadata",
         "ServerLive", "ModelStatistics", "RepositoryIndex", "SystemSharedMemoryStatus",
         "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
         "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
         "TraceSetting", "LogSettings")


#: connections kept open to one Triton's HTTP port (aiohttp's pool, per instance)
HTTP_CONNECTIONS = 256


class Upstream:
    """Calls to one Triton's ``GRPCInferenceService`` and HTTP endpoint; open after
    :meth:`open`. ``http_url``: ``http://host:port`` of Triton's HTTP port (None: the HTTP
    door cannot reach this instance)."""

    def __init__(self, instance: str, url: str, http_url: str | None = None) -> None:
        self.instance = instance
        self.url = url
        self.http_url = http_url
        self._http: aiohttp.ClientSession | None = None
        #: requests and open streams in flight on this instance (plain int: loop-owned)
        self.outstanding = 0
        #: the same per model (entries stay at 0 rather than being deleted: no churn)
        self.by_model: dict[str, int] = {}
        #: inference requests sent to this instance since start (``/metrics``)
        self.requests = 0
        #: in flight from the gateway's worker processes, per model and in all, as they last
        #: reported (``gateway/workers/``); a removal waits for these too
        self.remote_by_model: dict[str, int] = {}
        self.remote_outstanding = 0
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
        """Requests for ``model`` in flight here, from this process and the workers."""
        return self.by_model.get(model, 0) + self.remote_by_model.get(model, 0)

    @property
    def busy(self) -> int:
        """Requests and streams in flight here, from this process and the workers."""
        return self.outstanding + self.remote_outstanding

    def call(self, method: str) -> Any:
        """The unary multi-callable for ``method`` (a name of :data:`UNARY`)."""
        return self._calls[method]

    def open_stream(self, metadata: tuple[tuple[str, str], ...] | None) -> Any:
        """A new ModelStreamInfer call to this Triton."""
        return self._stream(metadata=metadata)

    def http(self) -> aiohttp.ClientSession:
        """The HTTP connection pool (made on first use: it belongs to the running loop)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=HTTP_CONNECTIONS),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return self._http

    async def reopen(self) -> None:
        """After its Triton restarted: a new channel (the old one waits out gRPC's reconnect
        back-off, seconds after a restart, failing calls meanwhile) and a new HTTP pool."""
        old = self._channel
        self.open()
        if old is not None:
            await old.close(grace=None)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._http is not None:
            await self._http.close()
            self._http = None
