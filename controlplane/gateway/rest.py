"""The KServe-v2 HTTP/REST front door, beside gRPC, on ``gateway.http_port`` (8000).

``POST /v2/models/<m>[/versions/<v>]/infer`` goes through the same serving core as gRPC
(``serving/path.py``): the same lazy load, waited for within the request's own
``parameters.timeout`` (microseconds) or else ``gateway.default_deadline_s``, routing, retry,
recording and bounds (the request's ``Content-Length`` is checked before its body is read).
The body is forwarded as it came -- JSON tensors or Triton's binary tensor extension, gzip or
deflate -- to the replica's Triton HTTP port, and its answer comes back as it is (errors made
client-safe). The other KServe-v2 and Triton routes are ``rest_server_wide.py``'s. Errors
take KServe's shape, ``{"error": "<message>"}``, with the status Triton's HTTP front end
would answer (``serving/status.py``); one catch-all answers anything unexpected with 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from aiohttp import web

from controlplane.errors import ConfigError, ControlPlaneError, InvalidArgument
from controlplane.gateway.buffered import TRACK_UNTIL_SENT_BYTES
from controlplane.gateway.rest_server_wide import RestServerWide
from controlplane.gateway.rest_upstream import Answer, forward
from controlplane.gateway.rest_wire import HEADER_LENGTH, error_body, parse_infer
from controlplane.gateway.status import client_message
from controlplane.serving.path import UpstreamError
from controlplane.serving.ports import Replica
from controlplane.serving.status import FROM_HTTP, Status

if TYPE_CHECKING:
    from controlplane.gateway.server import Gateway

log = logging.getLogger(__name__)

#: request headers passed on to Triton with the body (the rest are the connection's)
FORWARDED_HEADERS = ("Content-Type", HEADER_LENGTH, "Content-Encoding", "Accept-Encoding")


class RestRoutes(Protocol):
    """The routes other than inference."""

    def add_routes(self, app: web.Application) -> None: ...


def error_response(status: Status, message: str) -> web.Response:
    return web.Response(status=status.http, body=error_body(message),
                        content_type="application/json")


class RestGateway:
    """The HTTP door over the gRPC gateway's core parts (one path, one set of bounds)."""

    def __init__(self, gateway: Gateway, server_wide: RestRoutes | None = None) -> None:
        self.gateway = gateway
        # a gateway worker forwards these to the control process (``workers/forward.py``)
        self.server_wide = server_wide or RestServerWide(gateway)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._caught], client_max_size=2**31 - 1)
        infer = "/v2/models/{model}{version:(/versions/[^/]+)?}/infer"
        app.router.add_post(infer, self.infer)
        self.server_wide.add_routes(app)
        return app

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port`` (0: a free port); returns the port. ``reuse_port``: share
        it with other processes' doors (workers; SO_REUSEPORT)."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True,
                           reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"the gateway's HTTP door cannot listen on {host}:{port}: "
                              f"{exc.strerror} (gateway.http_port / WARMCTL_GATEWAY__HTTP_PORT)"
                              ) from None
        server = site._server  # aiohttp keeps the bound sockets there
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._runner is not None:
            await self._runner.shutdown()
            await asyncio.wait_for(self._runner.cleanup(), grace_s + 5)
            self._runner = None

    @web.middleware
    async def _caught(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        """The one catch-all of the HTTP door: our errors in KServe's shape, anything
        unexpected logged and answered 500 without its text."""
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(FROM_HTTP.get(exc.status, Status.INVALID_ARGUMENT),
                                  exc.reason or "malformed request")
        except ControlPlaneError as exc:
            return error_response(Status.of(exc), client_message(
                exc.message, expose_tracebacks=self.gateway.expose_tracebacks))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway HTTP %s %s failed", request.method, request.path)
            return error_response(Status.INTERNAL,
                                  f"internal error in the gateway's HTTP {request.path} (logged)")

    # -- inference --------------------------------------------------------------------------
    async def infer(self, request: web.Request) -> web.StreamResponse:
        gateway = self.gateway
        size = request.content_length
        if size is None:
            raise InvalidArgument("an inference request needs a Content-Length")
        gateway.buffered.take(size)  # before the body is read: ResourceExhausted by name
        held = size
        try:
            body = await request.read()
            model = request.match_info["model"]
            version = request.match_info["version"].removeprefix("/versions/")
            parsed = parse_infer(body, request.headers, model, version)
            loop = asyncio.get_running_loop()
            # The request's own timeout (Triton's schedule-policy extension, forwarded in the
            # body) bounds only the wait for a cold model's load, which is ours. Triton
            # applies it to the request itself only where the model's queue policy allows
            # (``allow_timeout_override``), so a ready model is given the gateway's deadline,
            # as plain Triton would have served it (a 30 us "timeout" sent by mistake was
            # answered 504 here before).
            started = loop.time()
            wait_until = started + (parsed.timeout_s or gateway.default_deadline_s)
            deadline = started + max(gateway.default_deadline_s, parsed.timeout_s or 0.0)
            headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
            target = request.rel_url.path

            async def send(rt: Replica, version: str | None) -> Answer:
                path = target if version is None else (
                    f"/v2/models/{quote(model, safe='')}/versions/{version}/infer")
                return await forward(rt, path, body, headers, deadline - loop.time())

            try:
                status, out_headers, answer = await gateway.path.call(
                    parsed.facts, body, lambda: wait_until - loop.time(), send)
            except UpstreamError as exc:
                return self._upstream_error(exc)
            response = web.Response(status=status, headers=out_headers, body=answer)
            if held < TRACK_UNTIL_SENT_BYTES:
                return response
            # a large one: held with its answer until it has been written out
            gateway.buffered.hold(len(answer))
            held += len(answer)
            await response.prepare(request)
            await response.write_eof()
            return response
        finally:
            gateway.buffered.give(held)

    def _upstream_error(self, exc: UpstreamError) -> web.Response:
        """Triton's own answer, its message made client-safe; an unreachable Triton 503."""
        if isinstance(exc.original, tuple):
            status, _, _ = exc.original
            return web.Response(status=status, content_type="application/json",
                                body=error_body(client_message(
                                    exc.message,
                                    expose_tracebacks=self.gateway.expose_tracebacks)))
        return error_response(exc.status, client_message(exc.message))
