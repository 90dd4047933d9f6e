"""The server-wide calls a gateway worker hands to the control process, as they came.

Readiness, metadata and config while cold, statistics, repository control, shared memory,
log and trace settings all read or change what the control process owns (the fleet, the
lifecycle, the shared-memory registry). A worker forwards them, bytes and the caller's
metadata (the admin token included) unchanged, to the control process's own gateway on
loopback, and answers with what it answered: one implementation of each, and the guard
applied there. Only inference (``ModelInfer``, ``ModelStreamInfer``, ``POST .../infer``)
is served by the worker itself.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
from aiohttp import web

from controlplane.errors import TritonUnavailable
from controlplane.fleet.shared_memory import METHODS as SHARED_MEMORY_METHODS
from controlplane.gateway.metadata import forwarded_metadata
from controlplane.gateway.server_wide import FORWARDED, Context, Handler
from controlplane.serving.upstream import SERVICE
from controlplane.triton.client import CHANNEL_OPTIONS

#: every gRPC method but inference (``server_wide.ServerWide.handlers`` serves them there)
SERVER_WIDE = ("ServerReady", "ModelReady", "ModelMetadata", "ModelConfig", "ServerMetadata",
               "RepositoryModelLoad", "RepositoryModelUnload", *FORWARDED,
               *SHARED_MEMORY_METHODS)
#: headers of an HTTP answer passed back (the rest are the connection's)
_ANSWER_HEADERS = ("Content-Type", "Content-Encoding", "Inference-Header-Content-Length")
_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding",
                         "content-length", "upgrade", "te", "trailer"})


class ForwardedServerWide:
    """The gRPC door's server-wide methods, each forwarded to ``target`` (``host:port``)."""

    def __init__(self, target: str, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}

    def handlers(self) -> dict[str, Handler]:
        return {name: self._forward(name) for name in SERVER_WIDE}

    def _call(self, method: str) -> Any:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        call = self._calls.get(method)
        if call is None:
            call = self._calls[method] = self._channel.unary_unary(f"/{SERVICE}/{method}")
        return call

    def _forward(self, method: str) -> Handler:
        async def forward(request: bytes, context: Context) -> bytes:
            remaining = context.time_remaining()
            try:
                answer: bytes = await self._call(method)(
                    request, metadata=forwarded_metadata(context),
                    timeout=self.timeout_s if remaining is None else remaining)
            except grpc.aio.AioRpcError as exc:  # already client-safe: the control's answer
                await context.abort(exc.code(), exc.details() or "")
            return answer

        return forward

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


class ForwardedRest:
    """The HTTP door's routes other than inference, each forwarded to ``base_url``."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.forward)

    async def forward(self, request: web.Request) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        try:
            async with self._session.request(
                    request.method, self.base_url + str(request.rel_url), headers=headers,
                    data=body or None,
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as answer:
                data = await answer.read()
                kept = {h: answer.headers[h] for h in _ANSWER_HEADERS if h in answer.headers}
                return web.Response(status=answer.status, body=data, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TritonUnavailable(f"the control process did not answer {request.method} "
                                    f"{request.path}: {type(exc).__name__}; retry") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
