"""The HTTP door's other KServe-v2 and Triton routes: health, metadata, config, statistics,
repository control, shared memory, trace and log settings.

They behave as the gRPC door's (``server_wide.py``): readiness is the control plane's; a
model's metadata and config come from the replica that serves it, or from its config.pbtxt
when it is cold; statistics, the repository index and settings go to the first serving
instance as they are; shared-memory registrations go through the fleet's registry (every
instance; restored on one that restarts); repository control and changes to shared memory,
trace and log settings are refused unless the settings allow them or the request carries
the admin token (``Authorization: Bearer <token>``), as on gRPC.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from tritonclient.grpc import service_pb2

from controlplane.errors import (
    ControlPlaneError,
    InvalidArgument,
    ModelNotFound,
    PermissionDenied,
    TritonUnavailable,
)
from controlplane.fleet.repository_load import no_files, repository_load
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.gateway.rest_upstream import forward, get
from controlplane.gateway.status import client_message
from controlplane.lifecycle.states import ModelState
from controlplane.serving.path import UpstreamError
from controlplane.serving.status import Status

if TYPE_CHECKING:
    from controlplane.gateway.server import Gateway

MODEL = "/v2/models/{model}{version:(/versions/[^/]+)?}"
#: the guarded route -> the setting that opens it
SETTINGS = {"shared memory": "GATEWAY__ALLOW_SHARED_MEMORY",
            "settings": "GATEWAY__ALLOW_SERVER_SETTINGS",
            "repository": "GATEWAY__ALLOW_REPOSITORY_CONTROL"}


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(value).encode(),
                        content_type="application/json")


class RestServerWide:
    def __init__(self, gateway: Gateway) -> None:
        self.g = gateway
        assert gateway.models is not None  # the control process's door
        self.models = gateway.models

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2", self.forward_get)
        r.add_get(MODEL, self.metadata)
        r.add_get(MODEL + "/ready", self.model_ready)
        r.add_get(MODEL + "/config", self.config)
        r.add_get("/v2/models/stats", self.forward_get)
        r.add_get(MODEL + "/stats", self.forward_get)
        r.add_post("/v2/repository/index", self.forward_post)
        r.add_post("/v2/repository/models/{model}/load", self.repository_load)
        r.add_post("/v2/repository/models/{model}/unload", self.repository_unload)
        for kind in ("system", "cuda"):
            base = f"/v2/{kind}sharedmemory"
            r.add_get(base + "/status", self.shm_status)
            r.add_get(base + "/region/{region}/status", self.shm_status)
            r.add_post(base + "/region/{region}/register", self.shm_register)
            r.add_post(base + "/region/{region}/unregister", self.shm_unregister)
            r.add_post(base + "/unregister", self.shm_unregister)
        for path in ("/v2/trace/setting", MODEL + "/trace/setting", "/v2/logging"):
            r.add_get(path, self.forward_get)
            r.add_post(path, self.settings)

    # -- health and description -------------------------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        """Ready as the control plane is (``readiness.py``); Triton's HTTP answers 400."""
        return web.Response(status=200 if self.g.ready() else 400)

    async def model_ready(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        try:
            status = self.models.status(name)
        except ModelNotFound:
            return web.Response(status=400)
        ready = (self.models.down_reason() is None and status.state is not ModelState.FAILED
                 and not status.quarantined and not status.disabled and not status.held)
        return web.Response(status=200 if ready else 400)

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        if self.g.replicas.route(name) is not None:
            return await self.forward_get(request)
        spec = self.models.repository.spec(name)  # ModelNotFound: 404
        batch = [-1] if spec.max_batch_size > 0 else []
        return _json({
            "name": name, "versions": self.models.repository.versions(name),
            "platform": spec.backend,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": [*batch, *t.dims]}
                       for t in spec.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": [*batch, *t.dims]}
                        for t in spec.outputs]})

    async def config(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        if self.g.replicas.route(name) is not None:
            return await self.forward_get(request)
        config = dict(self.models.repository.spec(name).config)
        config.setdefault("name", name)
        return _json(config)

    # -- forwarded as they are --------------------------------------------------------------
    def _first(self) -> InstanceRuntime:
        order = self.models.order
        targets = [rt for rt in order if rt.routable] or order[:1]
        if not targets:
            raise TritonUnavailable("no Triton instance is serving")
        return targets[0]

    async def _forward(self, request: web.Request, rt: InstanceRuntime) -> web.Response:
        body = await request.read() if request.can_read_body else b""
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        try:
            if request.method == "GET":
                status, out, payload = await get(rt, request.rel_url.path_qs,
                                                 self.g.call_timeout_s)
            else:
                status, out, payload = await forward(rt, request.rel_url.path_qs, body,
                                                     headers, self.g.call_timeout_s)
        except UpstreamError as exc:
            status = exc.original[0] if isinstance(exc.original, tuple) else exc.status.http
            return _json({"error": client_message(exc.message)}, status)
        return web.Response(status=status, headers=out, body=payload)

    async def forward_get(self, request: web.Request) -> web.Response:
        name = request.match_info.get("model")
        rt = self.g.replicas.route(name) if name else None
        return await self._forward(request, rt if isinstance(rt, InstanceRuntime)
                                   else self._first())

    async def forward_post(self, request: web.Request) -> web.Response:
        return await self._forward(request, self._first())

    async def settings(self, request: web.Request) -> web.Response:
        self._check(request, "settings", self.g.guard.allow_server_settings)
        return await self._forward(request, self._first())

    # -- guarded ---------------------------------------------------------------------------
    def _check(self, request: web.Request, what: str, allowed: bool) -> None:
        auth = request.headers.get("Authorization")
        if allowed or (auth and self.g.guard.has_admin_token([("authorization", auth)])):
            return
        raise PermissionDenied(
            f"{what} changes act on the whole shared Triton and are disabled on the inference "
            f"gateway: set WARMCTL_{SETTINGS[what]}=true, or call with the admin token "
            "(header 'Authorization: Bearer <admin token>')")

    async def repository_load(self, request: web.Request) -> web.Response:
        self._check(request, "repository", self.g.guard.allow_repository_control
                    or self.g.allow_repository_control)
        body = await request.read()
        try:
            parameters = (json.loads(body) or {}).get("parameters") or {} if body.strip() else {}
        except ValueError as exc:
            raise InvalidArgument(f"malformed load request: {exc}") from None
        if not isinstance(parameters, dict):
            raise InvalidArgument("malformed load request: 'parameters' must be an object")
        no_files(parameters)
        config = parameters.get("config")
        if config is not None and not isinstance(config, str):
            config = json.dumps(config)  # Triton's HTTP API takes the config as a string
        # an operator's load, as plain Triton's (``fleet/repository_load.py``)
        await repository_load(self.models, request.match_info["model"], config)
        return web.Response(status=200)

    async def repository_unload(self, request: web.Request) -> web.Response:
        self._check(request, "repository", self.g.guard.allow_repository_control
                    or self.g.allow_repository_control)
        await self.models.unload(request.match_info["model"], trigger="repository")
        return web.Response(status=200)

    # -- shared memory, through the fleet's registry ------------------------------------
    @staticmethod
    def _kind(request: web.Request) -> tuple[str, str]:
        kind = "Cuda" if request.path.startswith("/v2/cuda") else "System"
        return kind, request.match_info.get("region", "")

    def _targets(self) -> list[str]:
        targets = [rt.name for rt in self.models.order if rt.live]
        if not targets:
            raise TritonUnavailable("no Triton instance is serving")
        return targets

    async def shm_register(self, request: web.Request) -> web.Response:
        self._check(request, "shared memory", self.g.guard.allow_shared_memory)
        kind, region = self._kind(request)
        body = json.loads(await request.read() or b"{}")
        if kind == "System":
            message: Any = service_pb2.SystemSharedMemoryRegisterRequest(
                name=region, key=str(body.get("key", "")), offset=int(body.get("offset", 0)),
                byte_size=int(body.get("byte_size", 0)))
        else:
            handle = base64.b64decode((body.get("raw_handle") or {}).get("b64", ""))
            message = service_pb2.CudaSharedMemoryRegisterRequest(
                name=region, raw_handle=handle, device_id=int(body.get("device_id", 0)),
                byte_size=int(body.get("byte_size", 0)))
        await self._registry(f"{kind}SharedMemoryRegister", message.SerializeToString())
        return web.Response(status=200)

    async def shm_unregister(self, request: web.Request) -> web.Response:
        self._check(request, "shared memory", self.g.guard.allow_shared_memory)
        kind, region = self._kind(request)
        request_type = getattr(service_pb2, f"{kind}SharedMemoryUnregisterRequest")
        await self._registry(f"{kind}SharedMemoryUnregister",
                             request_type(name=region).SerializeToString())
        return web.Response(status=200)

    async def shm_status(self, request: web.Request) -> web.Response:
        kind, region = self._kind(request)
        request_type = getattr(service_pb2, f"{kind}SharedMemoryStatusRequest")
        answer = await self._registry(f"{kind}SharedMemoryStatus",
                                      request_type(name=region).SerializeToString())
        response_type = getattr(service_pb2, f"{kind}SharedMemoryStatusResponse")
        regions = response_type.FromString(answer).regions
        if kind == "System":
            return _json([{"name": r.name, "key": r.key, "offset": r.offset,
                           "byte_size": r.byte_size} for r in regions.values()])
        return _json([{"name": r.name, "device_id": r.device_id, "byte_size": r.byte_size}
                      for r in regions.values()])

    async def _registry(self, method: str, request: bytes) -> bytes:
        registry = self.models.shared_memory
        act = {"Register": registry.register, "Unregister": registry.unregister,
               "Status": registry.status}[method.split("SharedMemory")[1]]
        try:
            return await act(method, request, self._targets())
        except grpc.aio.AioRpcError as exc:  # Triton's refusal, as a status of ours
            raise ControlPlaneError(client_message(exc.details() or ""),
                                    code=Status.named(exc.code().name).error_code) from None
