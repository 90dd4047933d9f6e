"""The gateway's server-wide RPCs: readiness, model description, what is forwarded to one
Triton, shared memory for the fleet, repository control.

Inference is ``server.py``'s; these answer for the fleet as a whole (readiness is the control
plane's, a cold model is described from its config.pbtxt, shared-memory registrations go
through the fleet's registry) or go to one serving instance as they are. Every request is
parsed before it is acted on, so malformed bytes are INVALID_ARGUMENT (the gateway's
catch-all), never Triton's INTERNAL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc
from tritonclient.grpc import service_pb2

from controlplane.errors import (
    ControlPlaneError,
    ModelNotFound,
    TritonUnavailable,
)
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.replicas import FleetReplicas
from controlplane.fleet.repository_load import no_files, repository_load
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.shared_memory import METHODS as SHARED_MEMORY_METHODS
from controlplane.gateway.describe import config_response, metadata_response
from controlplane.gateway.guard import GUARDED, Guard
from controlplane.gateway.metadata import forwarded_metadata
from controlplane.lifecycle.states import ModelState
from controlplane.serving.upstream import UNARY

#: grpc.aio.ServicerContext; grpcio ships no type information
Context: TypeAlias = Any
Handler: TypeAlias = Callable[[bytes, Context], Awaitable[bytes]]
Abort: TypeAlias = Callable[[Context, "ControlPlaneError | grpc.aio.AioRpcError"],
                            Awaitable[NoReturn]]
#: to the first serving instance, as they are
FORWARDED = ("ServerLive", "ModelStatistics", "RepositoryIndex", "TraceSetting",
             "LogSettings")


class ServerWide:
    def __init__(self, *, models: Fleet, replicas: FleetReplicas, guard: Guard,
                 ready: Callable[[], bool], abort: Abort, call_timeout_s: float,
                 allow_repository_control: bool) -> None:
        self.models = models
        self.replicas = replicas
        self.guard = guard
        self.ready = ready
        self.abort = abort
        self.call_timeout_s = call_timeout_s
        self.allow_repository_control = allow_repository_control

    def handlers(self) -> dict[str, Handler]:
        return {
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ModelMetadata": self._describe("ModelMetadata", metadata_response),
            "ModelConfig": self._describe("ModelConfig", config_response),
            "ServerMetadata": self.server_metadata,
            "RepositoryModelLoad": self.repository_load,
            "RepositoryModelUnload": self.repository_unload,
            **{name: self._forward(name) for name in FORWARDED},
            **{name: self._shared_memory(name) for name in SHARED_MEMORY_METHODS},
        }

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
                 and status.state is not ModelState.FAILED and not status.quarantined
                 and not status.disabled and not status.held)
        return bytes(service_pb2.ModelReadyResponse(ready=ready).SerializeToString())

    async def server_metadata(self, request: bytes, context: Context) -> bytes:
        return await self._forward("ServerMetadata")(request, context)

    def _describe(self, method: str, from_repository: Callable[[Any, str], bytes]
                  ) -> Callable[[bytes, Context], Awaitable[bytes]]:
        async def describe(request: bytes, context: Context) -> bytes:
            name = service_pb2.ModelMetadataRequest.FromString(request).name
            rt = self.replicas.route(name)
            if rt is not None:
                return await self._call(rt, method, request, context)
            try:
                self.models.state(name)
                return from_repository(self.models.repository, name)
            except ControlPlaneError as exc:
                await self.abort(context, exc)

        return describe

    async def _check_guard(self, method: str, request: bytes, context: Context) -> None:
        """Refuse what the caller may not do; parse the request first, so malformed bytes are
        INVALID_ARGUMENT here (the catch-all) and never reach Triton as INTERNAL."""
        getattr(service_pb2, f"{method}Request").FromString(request)
        if method in GUARDED:
            refused = self.guard.refusal(method, request, context.invocation_metadata())
            if refused is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)

    def _forward(self, method: str) -> Handler:
        """Server-wide RPCs: to the first serving instance."""
        async def forward(request: bytes, context: Context) -> bytes:
            await self._check_guard(method, request, context)
            targets = [rt for rt in self.models.order if rt.routable] or self.models.order[:1]
            if not targets:
                await self.abort(context, TritonUnavailable("no Triton instance is serving"))
            return await self._call(targets[0], method, request, context)

        return forward

    def _shared_memory(self, method: str) -> Handler:
        """Shared-memory register, unregister and status: for the whole fleet, through the
        registry (``fleet/shared_memory.py``): every instance whose Triton serves."""
        verb = method.removeprefix("System").removeprefix("Cuda").removeprefix("SharedMemory")

        async def shared(request: bytes, context: Context) -> bytes:
            await self._check_guard(method, request, context)
            targets = [rt.name for rt in self.models.order if rt.live]
            if not targets:
                await self.abort(context, TritonUnavailable("no Triton instance is serving"))
            registry = self.models.shared_memory
            act = {"Register": registry.register, "Unregister": registry.unregister,
                   "Status": registry.status}[verb]
            try:
                return await act(method, request, targets)
            except grpc.aio.AioRpcError as exc:
                await self.abort(context, exc)

        return shared


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
        parameters = dict(message.parameters)
        # an operator's load, as plain Triton's (``fleet/repository_load.py``)
        try:
            no_files(parameters)
            config = parameters["config"].string_param if "config" in parameters else None
            await repository_load(self.models, message.model_name, config)
        except ControlPlaneError as exc:
            await self.abort(context, exc)
        return bytes(service_pb2.RepositoryModelLoadResponse().SerializeToString())

    async def repository_unload(self, request: bytes, context: Context) -> bytes:
        message = service_pb2.RepositoryModelUnloadRequest.FromString(request)
        await self._check_control(context, "unload")
        # an operator's unload: held cold (ModelReady false) until an operator loads it
        try:
            await self.models.unload(message.model_name, trigger="repository")
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
