"""``inference.GRPCInferenceService`` in front of Triton (streams: ``streams.py``).

Requests stay serialized: each method is registered with raw-bytes (de)serializers, the
handler reads only what routing and recording need (``wire.py``), and the same bytes go to
the Triton instance the inference path admits them to (``fleet/inference.py``: a ready
replica, or the one a cold model's single load made ready), over that instance's channel.
Answers from Triton come back as they are, errors included.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc
from tritonclient.grpc import service_pb2

from controlplane.errors import (
    ConfigError,
    ControlPlaneError,
    InvalidArgument,
    ModelNotFound,
    TritonUnavailable,
)
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.inference import InferencePath
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.upstream import UNARY, Upstream
from controlplane.gateway.describe import config_response, metadata_response
from controlplane.gateway.guard import GUARDED, Guard
from controlplane.gateway.status import abort, abort_upstream, grpc_status
from controlplane.gateway.streams import forwarded_metadata, proxy_stream
from controlplane.gateway.wire import RequestHeader, parse_request_header
from controlplane.lifecycle.states import ModelState
from controlplane.traffic.observation import OK, Observation
from controlplane.traffic.recorder import TrafficRecorder

SERVICE = "inference.GRPCInferenceService"
#: grpc.aio.ServicerContext; grpcio ships no type information
Context: TypeAlias = Any
#: answer DEADLINE_EXCEEDED ourselves slightly before the client's deadline fires
_DEADLINE_MARGIN_S = 0.005
_FORWARDED = ("ServerLive", "ModelStatistics", "RepositoryIndex", "SystemSharedMemoryStatus",
              "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
              "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
              "TraceSetting", "LogSettings")
#: sent to every serving instance: a request that names a region may be routed to any of them
_BROADCAST = frozenset({"SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
                        "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister"})


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
        max_request_bytes: int = 256 << 20,
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
        self.max_request_bytes = max_request_bytes
        self.expose_tracebacks = expose_tracebacks
        #: who may make the server-wide RPCs (``guard.py``)
        self.guard = guard or Guard(allow_repository_control=allow_repository_control)
        #: read by ``/metrics`` at scrape time (plain ints: no metrics work per request)
        self.in_flight = 0
        self.open_streams = 0
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self._counted_infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.model_stream_infer),
            "ServerReady": grpc.unary_unary_rpc_method_handler(self.server_ready),
            "ModelReady": grpc.unary_unary_rpc_method_handler(self.model_ready),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(
                self._describe("ModelMetadata", metadata_response)),
            "ModelConfig": grpc.unary_unary_rpc_method_handler(
                self._describe("ModelConfig", config_response)),
            "ServerMetadata": grpc.unary_unary_rpc_method_handler(self.server_metadata),
            "RepositoryModelLoad": grpc.unary_unary_rpc_method_handler(self.repository_load),
            "RepositoryModelUnload": grpc.unary_unary_rpc_method_handler(self.repository_unload),
        }
        for name in _FORWARDED:
            handlers[name] = grpc.unary_unary_rpc_method_handler(self._forward(name))
        self._server = grpc.aio.server(options=[
            # gRPC refuses a larger message itself (RESOURCE_EXHAUSTED "Received message larger
            # than max") before it is buffered: the bound on what one request can make us hold
            ("grpc.max_receive_message_length", self.max_request_bytes),
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
        model = header.model
        try:
            rt, cold = await self.path.admit(model, self._budget(context))
        except ControlPlaneError as exc:
            # unknown names too: the recorder counts them and stores nothing
            self.record(header, arrived, time.time(), grpc_status(exc).name, True,
                        time.time() - arrived, request)
            await self.abort(context, exc)
        wait_s = time.time() - arrived if cold else None
        tried: list[str] = []
        while True:
            remaining = context.time_remaining()
            try:
                response: bytes = await self._infer(rt.upstream, request, context, remaining)
                break
            except grpc.aio.AioRpcError as exc:
                self.upstream_failed(rt.name, model, exc.code().name, exc.details() or "")
                # UNAVAILABLE: that Triton cannot be reached (it died, or is restarting);
                # another ready replica takes the request, once
                if exc.code() is grpc.StatusCode.UNAVAILABLE and not tried:
                    tried.append(rt.name)
                    other = self.path.route(model, exclude=tried)
                    if other is not None:
                        rt = other
                        continue
                self.record(header, arrived, time.time(), exc.code().name, cold, wait_s, request)
                await self.abort(context, exc)
        self.record(header, arrived, time.time(), OK, cold, wait_s, request)
        return response

    async def _infer(self, upstream: Upstream | None, request: bytes, context: Context,
                     remaining: float | None) -> bytes:
        assert upstream is not None  # a routable runtime has started
        upstream.outstanding += 1  # plain ints: this is the hot path
        upstream.requests += 1
        try:
            response: bytes = await upstream.call("ModelInfer")(
                request, timeout=self.default_deadline_s if remaining is None else remaining,
                metadata=forwarded_metadata(context))
        finally:
            upstream.outstanding -= 1
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
            elif recorder.wants_witness():  # no copy: the bytes are read at flush time
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

    # -- health and description -------------------------------------------------------------
    async def server_ready(self, request: bytes, context: Context) -> bytes:
        """Ready means the control plane is: Triton serving and every pinned model ready
        (``readiness.py``); false while Triton is down, hung or restarting.

        Triton's own answer turns false while any model loads (strict readiness), which a
        lazy load would make every client see.
        """
        ready = self.ready()
        return bytes(service_pb2.ServerReadyResponse(ready=ready).SerializeToString())

    async def model_ready(self, request: bytes, context: Context) -> bytes:
        """True for every model the gateway will serve: a cold one loads on first request.

        False while Triton cannot serve, and for a model that failed, is disabled, or is held
        cold by the operator (a request would be refused).
        """
        name = service_pb2.ModelReadyRequest.FromString(request).name
        try:
            status = self.models.status(name)
        except ModelNotFound:
            status = None
        ready = (status is not None and self.models.down_reason() is None
                 and status.state is not ModelState.FAILED
                 and not status.disabled and not status.held)
        return bytes(service_pb2.ModelReadyResponse(ready=ready).SerializeToString())

    async def server_metadata(self, request: bytes, context: Context) -> bytes:
        return await self._forward("ServerMetadata")(request, context)

    def _describe(self, method: str, from_repository: Callable[[Any, str], bytes]
                  ) -> Callable[[bytes, Context], Awaitable[bytes]]:
        async def describe(request: bytes, context: Context) -> bytes:
            name = service_pb2.ModelMetadataRequest.FromString(request).name
            rt = self.path.route(name)
            if rt is not None:
                return await self._call(rt, method, request, context)
            try:
                self.models.state(name)
                return from_repository(self.models.repository, name)
            except ControlPlaneError as exc:
                await self.abort(context, exc)

        return describe

    def _forward(self, method: str) -> Callable[[bytes, Context], Awaitable[bytes]]:
        """Server-wide RPCs: to the first serving instance; shared-memory registrations to
        every serving instance (the first error answers)."""
        async def forward(request: bytes, context: Context) -> bytes:
            if method in GUARDED:
                refused = self.guard.refusal(method, request, context.invocation_metadata())
                if refused is not None:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
            targets = [rt for rt in self.models.order if rt.routable] or self.models.order[:1]
            if method not in _BROADCAST:
                targets = targets[:1]
            if not targets:
                await self.abort(context, TritonUnavailable("no Triton instance is serving"))
            answers = [await self._call(rt, method, request, context) for rt in targets]
            return answers[0]

        return forward

    async def _call(self, rt: InstanceRuntime, method: str, request: bytes,
                    context: Context) -> bytes:
        assert rt.upstream is not None and method in UNARY
        remaining = context.time_remaining()
        try:
            response: bytes = await rt.upstream.call(method)(
                request, timeout=self.call_timeout_s if remaining is None else remaining,
                metadata=forwarded_metadata(context))
        except grpc.aio.AioRpcError as exc:
            await self.abort(context, exc)
        return response

    # -- repository control -----------------------------------------------------------------
    async def repository_load(self, request: bytes, context: Context) -> bytes:
        message = service_pb2.RepositoryModelLoadRequest.FromString(request)
        await self._check_control(context, "load")
        if message.parameters:
            await self.abort(context, InvalidArgument(
                "config and file overrides are not accepted through the gateway"))
        try:
            await self.models.load(message.model_name, trigger="gateway")
        except ControlPlaneError as exc:
            await self.abort(context, exc)
        return bytes(service_pb2.RepositoryModelLoadResponse().SerializeToString())

    async def repository_unload(self, request: bytes, context: Context) -> bytes:
        message = service_pb2.RepositoryModelUnloadRequest.FromString(request)
        await self._check_control(context, "unload")
        try:
            await self.models.unload(message.model_name, trigger="gateway")
        except ControlPlaneError as exc:
            await self.abort(context, exc)
        return bytes(service_pb2.RepositoryModelUnloadResponse().SerializeToString())

    async def _check_control(self, context: Context, action: str) -> None:
        if not self.allow_repository_control and not self.guard.allow_repository_control \
                and not self.guard.has_admin_token(context.invocation_metadata()):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"repository control is disabled on the inference gateway; {action} models "
                f"through the admin API (POST /models/<name>/{action}), set "
                "WARMCTL_GATEWAY__ALLOW_REPOSITORY_CONTROL=true, or call with the admin token "
                "(metadata 'authorization: Bearer <admin token>')")


def _bind_problem(host: str, port: int) -> str:
    """Why ``host:port`` cannot be bound (gRPC logs the reason but does not return it)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "the address is taken or unusable"
