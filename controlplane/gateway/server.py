"""``inference.GRPCInferenceService`` in front of Triton (streams: ``streams.py``).

Requests stay serialized: each method is registered with raw-bytes (de)serializers, the
handler reads only what routing and recording need (``wire.py``), and the same bytes go to
the Triton instance the inference path admits them to (``fleet/inference.py``: a ready
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
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from controlplane.errors import (
    ConfigError,
    ControlPlaneError,
    InvalidArgument,
    ResourceExhausted,
)
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.inference import InferencePath
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.gateway.buffered import (
    TRACK_UNTIL_SENT_BYTES,
    Buffered,
    default_max_buffered_bytes,
)
from controlplane.gateway.guard import Guard
from controlplane.gateway.server_wide import ServerWide
from controlplane.gateway.status import abort, abort_upstream, grpc_status
from controlplane.gateway.streams import forwarded_metadata, proxy_stream
from controlplane.gateway.wire import RequestHeader, parse_request_header
from controlplane.traffic.observation import OK, Observation
from controlplane.traffic.recorder import TrafficRecorder

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
#: a served request's bytes are handed to the value-range reader (1 in
#: ``traffic.range_sample_every``) only up to this size: it holds them until the next flush
_WITNESS_MAX_BYTES = 4 << 20

log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self,
        *,
        models: Fleet,
        recorder: TrafficRecorder | None,
        default_deadline_s: float = 120.0,
        call_timeout_s: float = 10.0,
        allow_repository_control: bool = False,
        ready: Callable[[], bool] = lambda: True,
        upstream_error: Callable[[str, str, str, str], None] | None = None,
        max_request_bytes: int = _GRPC_MAX_MESSAGE,
        max_buffered_bytes: int | None = None,
        expose_tracebacks: bool = False,
        guard: Guard | None = None,
    ) -> None:
        self.models = models
        self.path = InferencePath(models, default_deadline_s)
        self.recorder = recorder
        self.default_deadline_s = default_deadline_s
        self.call_timeout_s = call_timeout_s
        self.allow_repository_control = allow_repository_control
        self.ready = ready
        #: told (instance, model, gRPC status name, message) of every error Triton answers a
        #: forwarded request with: a lost model or a dead Triton is noticed on the first one
        self.upstream_error = upstream_error
        #: request bytes held now, and the bounds on them (``buffered.py``)
        self.buffered = Buffered(max_request_bytes,
                                 max_buffered_bytes or default_max_buffered_bytes())
        self.expose_tracebacks = expose_tracebacks
        #: who may make the server-wide RPCs (``guard.py``)
        self.guard = guard or Guard(allow_repository_control=allow_repository_control)
        self.server_wide = ServerWide(
            models=models, path=self.path, guard=self.guard, ready=ready, abort=self.abort,
            call_timeout_s=call_timeout_s, allow_repository_control=allow_repository_control)
        #: read by ``/metrics`` at scrape time (plain ints: no metrics work per request)
        self.in_flight = 0
        self.open_streams = 0
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
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
            ("grpc.so_reuseport", 0),
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

    async def _serve(self, header: RequestHeader, request: bytes, context: Context,
                     arrived: float) -> bytes:
        model, sequence = header.model, header.sequence
        try:
            rt, cold = await self.path.admit(model, self._budget(context), sequence=sequence)
        except ControlPlaneError as exc:
            # unknown names too: the recorder counts them and stores nothing
            self.record(header, arrived, time.time(), grpc_status(exc).name, True,
                        time.time() - arrived, request)
            await self.abort(context, exc)
        wait_s = time.time() - arrived if cold else None
        tried: list[str] = []
        while True:
            try:
                response = await self._infer(rt, model, request, context)
                break
            except grpc.aio.AioRpcError as exc:
                status = exc.code().name
                self.upstream_failed(rt.name, model, status, exc.details() or "")
                # Triton died, or warmctl is removing that replica: Triton did not run it,
                # another replica takes it (once, within its deadline)
                if not tried and self.path.retry_on(rt, model, status, sequence):
                    tried.append(rt.name)
                    try:
                        rt, waited = await self.path.admit(
                            model, self._budget(context), exclude=tried, sequence=sequence)
                    except ControlPlaneError:
                        pass  # nowhere else now: the client gets Triton's own answer
                    else:
                        if waited and wait_s is None:
                            cold, wait_s = True, time.time() - arrived
                        continue
                self.record(header, arrived, time.time(), status, cold, wait_s, request)
                await self.abort(context, exc)
        self.record(header, arrived, time.time(), OK, cold, wait_s, request)
        return response

    async def _infer(self, rt: InstanceRuntime, model: str, request: bytes,
                     context: Context) -> bytes:
        upstream = rt.upstream
        assert upstream is not None  # a routable runtime has started
        remaining = context.time_remaining()
        upstream.begin(model)  # plain ints: this is the hot path
        upstream.requests += 1
        try:
            response: bytes = await upstream.call("ModelInfer")(
                request, timeout=self.default_deadline_s if remaining is None else remaining,
                metadata=forwarded_metadata(context))
        finally:
            upstream.end(model)
        return response

    def upstream_failed(self, instance: str, model: str, status: str, message: str) -> None:
        if self.upstream_error is not None and status != "CANCELLED":
            self.upstream_error(instance, model, status, message)

    @staticmethod
    def _budget(context: Context) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else remaining - _DEADLINE_MARGIN_S

    async def wait_ready(self, model: str, context: Context) -> None:
        """Wait for ``model`` within the request's deadline (``InferencePath.wait_ready``)."""
        await self.path.wait_ready(model, self._budget(context))

    def record(self, header: RequestHeader, arrived: float, finished: float, outcome: str,
               cold: bool, wait_s: float | None, request: bytes | None) -> None:
        recorder = self.recorder
        if recorder is None or not recorder.enabled:
            return
        observation = Observation(header.model, header.version, header.inputs, arrived,
                                  finished - arrived, outcome, cold, wait_s)
        if request is not None and header.raw_spans and outcome == OK:
            if recorder.wants_payload(observation, len(request)):
                observation = observation._replace(payload=(request, header.raw_spans))
            elif len(request) <= _WITNESS_MAX_BYTES and recorder.wants_witness():
                # no copy: the bytes are read at flush time
                observation = observation._replace(witness=(request, header.raw_spans))
        recorder.record(observation)

    async def model_stream_infer(self, requests: AsyncIterator[bytes],
                                 context: Context) -> AsyncIterator[bytes]:
        # grpc.aio wants an async generator function as a stream handler
        self.open_streams += 1
        try:
            async for response in proxy_stream(self, requests, context):
                yield response
        finally:
            self.open_streams -= 1

    def record_unmatched(self, header: RequestHeader, arrived: float, cold: bool,
                         wait_s: float | None) -> None:
        if self.recorder is not None and self.recorder.enabled:
            self.recorder.record(Observation(header.model, header.version, header.inputs,
                                             arrived, None, OK, cold, wait_s))


def _bind_problem(host: str, port: int) -> str:
    """Why ``host:port`` cannot be bound (gRPC logs the reason but does not return it)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "the address is taken or unusable"
