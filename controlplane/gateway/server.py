"""``inference.GRPCInferenceService`` in front of Triton (streams: ``streams.py``).

Requests stay serialized: each method is registered with raw-bytes (de)serializers, the
handler reads only what routing and recording need (``wire.py``), and the same bytes go to
the Triton instance the serving core admits them to (``serving/path.py``: a ready
replica, or the one a cold model's single load made ready), over that instance's channel.
Answers from Triton come back as they are, errors included (made client-safe). The
server-wide RPCs (readiness, description, shared memory, repository control) are
``server_wide.py``'s; every unary method has one catch-all here (``_caught``).
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from controlplane.errors import (
    ConfigError,
    ControlPlaneError,
    InvalidArgument,
    ResourceExhausted,
)
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.replicas import FleetReplicas
from controlplane.gateway.buffered import (
    TRACK_UNTIL_SENT_BYTES,
    Buffered,
    default_max_buffered_bytes,
)
from controlplane.gateway.guard import Guard
from controlplane.gateway.metadata import forwarded_metadata
from controlplane.gateway.server_wide import ServerWide
from controlplane.gateway.status import abort, abort_upstream
from controlplane.gateway.streams import proxy_stream
from controlplane.gateway.wire import parse_request_header, with_version
from controlplane.serving.facts import RequestFacts
from controlplane.serving.path import InferencePath, UpstreamError
from controlplane.serving.ports import Observations, Replica, Replicas
from controlplane.serving.status import Status

SERVICE = "inference.GRPCInferenceService"
#: grpc.aio.ServicerContext; grpcio ships no type information
Context: TypeAlias = Any
Handler: TypeAlias = Callable[[bytes, Context], Awaitable[bytes]]
#: answer DEADLINE_EXCEEDED ourselves slightly before the client's deadline fires
_DEADLINE_MARGIN_S = 0.005
#: to the first serving instance, as they are
_FORWARDED = ("ServerLive", "ModelStatistics", "RepositoryIndex", "TraceSetting",
              "LogSettings")
#: gRPC's own ceiling on a message (and Triton's default); our bounds are ``buffered.py``'s
_GRPC_MAX_MESSAGE = (2 << 30) - 1

log = logging.getLogger(__name__)


class ServerWideHandlers(Protocol):
    """The server-wide RPCs (everything but inference), by method name."""

    def handlers(self) -> dict[str, Handler]: ...


class Gateway:
    def __init__(
        self,
        *,
        models: Fleet | None,
        recorder: Observations | None,
        default_deadline_s: float = 120.0,
        call_timeout_s: float = 10.0,
        allow_repository_control: bool = False,
        ready: Callable[[], bool] = lambda: True,
        upstream_error: Callable[[str, str, str, str], None] | None = None,
        max_request_bytes: int = _GRPC_MAX_MESSAGE,
        max_buffered_bytes: int | None = None,
        expose_tracebacks: bool = False,
        guard: Guard | None = None,
        replicas: Replicas | None = None,
        server_wide: ServerWideHandlers | None = None,
    ) -> None:
        # in the control process: the fleet, as the serving core's port; in a gateway worker
        # (``workers/``): the routing table pushed to it, and the server-wide RPCs forwarded
        # to the control process
        self.models = models
        if replicas is None:
            assert models is not None
            replicas = FleetReplicas(models)
        self.replicas = replicas
        self.path = InferencePath(self.replicas, recorder, default_deadline_s)
        self.default_deadline_s = default_deadline_s
        self.call_timeout_s = call_timeout_s
        self.allow_repository_control = allow_repository_control
        self.ready = ready
        if upstream_error is not None:
            # told of every error a replica answers with: a lost model or a dead Triton is
            # noticed on the first one
            assert isinstance(self.replicas, FleetReplicas)
            self.replicas.on_failure.append(upstream_error)
        #: request bytes held now, and the bounds on them (``buffered.py``)
        self.buffered = Buffered(max_request_bytes,
                                 max_buffered_bytes or default_max_buffered_bytes())
        self.expose_tracebacks = expose_tracebacks
        #: who may make the server-wide RPCs (``guard.py``)
        self.guard = guard or Guard(allow_repository_control=allow_repository_control)
        if server_wide is None:
            assert models is not None and isinstance(self.replicas, FleetReplicas)
            server_wide = ServerWide(
                models=models, replicas=self.replicas, guard=self.guard, ready=ready,
                abort=self.abort, call_timeout_s=call_timeout_s,
                allow_repository_control=allow_repository_control)
        self.server_wide = server_wide
        #: read by ``/metrics`` at scrape time (plain ints: no metrics work per request)
        self.in_flight = 0
        self.open_streams = 0
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port`` (0: a free port); returns the port. ``reuse_port``: share
        it with other processes' gateways (workers; SO_REUSEPORT), else fail when taken."""
        unary: dict[str, Handler] = {"ModelInfer": self._counted_infer,
                                     **self.server_wide.handlers()}
        handlers: dict[str, grpc.RpcMethodHandler] = {
            name: grpc.unary_unary_rpc_method_handler(self._caught(name, handler))
            for name, handler in unary.items()}
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer)
        self._server = grpc.aio.server(options=[
            # gRPC reads a message whole before a handler sees it; its own refusal names no
            # setting, so it is set to gRPC's ceiling (Triton's default) and our bounds
            # refuse by name the moment the message arrives (``buffered.py``)
            ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE),
            ("grpc.max_send_message_length", -1),
            # grpcio sets SO_REUSEPORT by default: a second gateway on a busy port would start
            # and silently take part of the traffic
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ])
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),))
        try:
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpcio >= 1.5x raises where older ones returned 0
            self.port = 0
        if self.port == 0:
            raise ConfigError(f"gateway cannot listen on {host}:{port}: {_bind_problem(host, port)}"
                              " (gateway.port / WARMCTL_GATEWAY__PORT)")
        await self._server.start()
        return self.port

    def _caught(self, method: str, handler: Handler) -> Handler:
        """The one catch-all of a unary method: bytes that do not parse are INVALID_ARGUMENT
        with a short reason, our errors map through ``status.py``, anything unexpected is
        logged and answered INTERNAL without its text (MLServer maps errors the same way)."""
        @functools.wraps(handler)
        async def caught(request: bytes, context: Context) -> bytes:
            try:
                return await handler(request, context)
            except grpc.aio.AbortError:
                raise
            except DecodeError as exc:
                await self.abort(context, InvalidArgument(
                    f"malformed {method}Request: {exc} ({len(request)} bytes)"))
            except ControlPlaneError as exc:
                await self.abort(context, exc)
            except Exception:
                log.exception("gateway %s failed", method)
                await context.abort(grpc.StatusCode.INTERNAL,
                                    f"internal error in the gateway's {method} (logged)")
            raise AssertionError("unreachable: abort raises")

        return caught

    async def abort(self, context: Context,
                    exc: ControlPlaneError | grpc.aio.AioRpcError) -> NoReturn:
        """Answer with ``exc``'s status and a client-safe message (``gateway/status.py``)."""
        if isinstance(exc, grpc.aio.AioRpcError):
            await abort_upstream(context, exc, expose_tracebacks=self.expose_tracebacks)
        await abort(context, exc, expose_tracebacks=self.expose_tracebacks)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking requests, let in-flight ones finish (up to ``grace_s``)."""
        if self._server is not None:
            await self._server.stop(grace_s)

    # -- inference --------------------------------------------------------------------------
    async def _counted_infer(self, request: bytes, context: Context) -> bytes:
        self.in_flight += 1
        try:
            return await self.model_infer(request, context)
        finally:
            self.in_flight -= 1

    async def model_infer(self, request: bytes, context: Context) -> bytes:
        arrived = time.time()
        try:
            header = parse_request_header(request)
        except InvalidArgument as exc:
            await self.abort(context, exc)
        size = len(request)
        try:
            self.buffered.take(size)
        except ResourceExhausted as exc:  # counted by the bound (``/metrics``), not recorded
            await self.abort(context, exc)
        if size < TRACK_UNTIL_SENT_BYTES:
            try:
                return await self._serve(header, request, context, arrived)
            finally:
                self.buffered.give(size)
        # a large one: held with its answer until gRPC has sent it (the RPC is done)
        held = [size]
        context.add_done_callback(lambda _: self.buffered.give(held[0]))
        response = await self._serve(header, request, context, arrived)
        self.buffered.hold(len(response))
        held[0] += len(response)
        return response

    async def _serve(self, facts: RequestFacts, request: bytes, context: Context,
                     arrived: float) -> bytes:
        metadata = forwarded_metadata(context)

        async def send(rt: Replica, version: str | None) -> bytes:
            assert rt.upstream is not None
            remaining = context.time_remaining()
            try:
                response: bytes = await rt.upstream.call("ModelInfer")(
                    request if version is None else with_version(request, version),
                    metadata=metadata,
                    timeout=self.default_deadline_s if remaining is None else remaining)
            except grpc.aio.AioRpcError as exc:
                raise UpstreamError(Status.named(exc.code().name), exc.details() or "",
                                    exc) from None
            return response

        try:
            return await self.path.call(facts, request, lambda: self._budget(context), send)
        except UpstreamError as exc:
            assert isinstance(exc.original, grpc.aio.AioRpcError)
            await self.abort(context, exc.original)

    @staticmethod
    def _budget(context: Context) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else remaining - _DEADLINE_MARGIN_S

    async def wait_ready(self, model: str, context: Context) -> None:
        """Wait for ``model`` within the request's deadline (``InferencePath.admit``)."""
        budget = self._budget(context)
        await self.replicas.wait_ready(
            model, self.default_deadline_s if budget is None else budget)

    async def model_stream_infer(self, requests: AsyncIterator[bytes],
                                 context: Context) -> AsyncIterator[bytes]:
        # grpc.aio wants an async generator function as a stream handler
        self.open_streams += 1
        try:
            async for response in proxy_stream(self, requests, context):
                yield response
        finally:
            self.open_streams -= 1


def _bind_problem(host: str, port: int) -> str:
    """Why ``host:port`` cannot be bound (gRPC logs the reason but does not return it)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "the address is taken or unusable"
