"""``ModelStreamInfer`` through the gateway: lazy loads per request, one upstream per model.

Each model gets an upstream stream of its own: Triton 2.51 aborts (gRPC ``ASSERTION FAILED:
!byte_buffer->Valid()``) when a decoupled model's responses and another model's share one
stream, so a client mixing them must not reach Triton as is. A model's requests stay on that
replica while it serves them; when it stops (its instance drains or dies, the replica is
trimmed) the next request opens a stream to another one -- except a step of an open
sequence, whose state is where it started. Errors that concern one request (unknown model,
failed load, malformed bytes, a bound passed) answer in-stream and the stream goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeAlias

import grpc
from tritonclient.grpc import service_pb2

from controlplane.errors import ControlPlaneError, InvalidArgument, echo_name
from controlplane.gateway.buffered import Buffered
from controlplane.gateway.metadata import forwarded_metadata
from controlplane.gateway.status import client_message
from controlplane.gateway.wire import (
    RequestHeader,
    parse_request_header,
    stream_response_id,
    with_version,
)
from controlplane.serving.path import InferencePath
from controlplane.serving.ports import Replica, Replicas
from controlplane.serving.status import Status
from controlplane.serving.versions import choose

#: grpc.aio.ServicerContext; grpcio ships no type information
Context: TypeAlias = Any


class StreamHost(Protocol):
    """What a stream needs of the gRPC door (``server.Gateway``): the serving core's path
    and ports, the bounds, and how errors are shown."""

    path: InferencePath
    replicas: Replicas
    buffered: Buffered
    expose_tracebacks: bool

    async def wait_ready(self, model: str, context: Context) -> None: ...


def stream_error(message: str, model: str = "", request_id: str = "", *,
                 expose_tracebacks: bool = False) -> bytes:
    response = service_pb2.ModelStreamInferResponse(
        error_message=client_message(message, expose_tracebacks=expose_tracebacks))
    response.infer_response.model_name = echo_name(model)
    response.infer_response.id = request_id
    return bytes(response.SerializeToString())


#: first byte of a response that carries ``error_message`` (field 1, length-delimited):
#: protobuf writes fields in number order, so only error responses start with it
_ERROR_FIRST = b"\x0a"


def _without_traceback(raw: bytes) -> bytes:
    """An in-stream error response of Triton's, its message made client-safe."""
    response = service_pb2.ModelStreamInferResponse.FromString(raw)
    response.error_message = client_message(response.error_message)
    return bytes(response.SerializeToString())


async def proxy_stream(gateway: StreamHost, requests: AsyncIterator[bytes],
                       context: Context) -> AsyncIterator[bytes]:
    metadata = forwarded_metadata(context)
    outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
    pending: dict[str, tuple[RequestHeader, float, bool, float | None]] = {}
    #: model -> (the instance its stream goes to, the call)
    upstreams: dict[str, tuple[Replica, Any]] = {}
    drains: list[asyncio.Task[None]] = []

    async def drain(model: str, rt: Replica, call: Any) -> None:
        # an open upstream stream counts as one outstanding request on its instance: a
        # drain waits for it (up to its timeout) and the router balances around it; not per
        # model, so a trim does not wait for a client's idle stream (its next request goes
        # to another replica)
        assert rt.upstream is not None
        rt.upstream.outstanding += 1
        try:
            async for raw in call:
                if pending:
                    matched = pending.pop(stream_response_id(raw), None)
                    if matched is not None:
                        header, arrived, cold, wait_s = matched
                        gateway.path.finish(header, arrived, Status.OK, cold, wait_s, None)
                if raw[:1] == _ERROR_FIRST and b"Stub process" in raw:  # its stub died
                    gateway.replicas.failed(rt.name, model, Status.INTERNAL,
                                            service_pb2.ModelStreamInferResponse
                                            .FromString(raw).error_message)
                if raw[:1] == _ERROR_FIRST and not gateway.expose_tracebacks:
                    raw = _without_traceback(raw)
                await outbox.put(raw)
        except grpc.aio.AioRpcError as exc:
            # Triton ended this model's stream (restart, crash): say so in-stream; the model's
            # next request opens a new one.
            if model in upstreams and upstreams[model][1] is call:
                del upstreams[model]
            gateway.replicas.failed(rt.name, model, Status.named(exc.code().name),
                                    exc.details() or "")
            await outbox.put(stream_error(
                f"stream to Triton for '{model}' ended: {exc.code().name} {exc.details()}",
                model, expose_tracebacks=gateway.expose_tracebacks))
        finally:
            rt.upstream.outstanding -= 1

    async def forward(raw: bytes) -> None:
        arrived = time.time()
        try:
            header = parse_request_header(raw)
        except InvalidArgument as exc:
            await outbox.put(stream_error(str(exc)))
            return
        try:
            gateway.buffered.take(len(raw))
        except ControlPlaneError as exc:
            await outbox.put(stream_error(exc.message, header.model, header.id))
            return
        try:
            await send(header, raw, arrived)
        finally:
            gateway.buffered.give(len(raw))

    def stays(opened: tuple[Replica, Any], header: RequestHeader) -> bool:
        """Whether this request goes on the model's open upstream stream."""
        rt, sequence = opened[0], header.sequence
        if sequence is not None and not sequence.start:  # its state is there, if anywhere
            return rt.live
        return rt.serves(header.model)

    async def send(header: RequestHeader, raw: bytes, arrived: float) -> None:
        opened = upstreams.get(header.model)
        cold = opened is None and not gateway.replicas.ready_now(header.model)
        wait_s = None
        try:
            if cold:
                await gateway.wait_ready(header.model, context)
            if opened is None or not stays(opened, header):
                # a model's requests on one client stream stay on one replica (sequence
                # state, decoupled responses); a new replica only if that one stops serving
                rt, _ = await gateway.path.admit(header.model, None)
                assert rt.upstream is not None
                if opened is not None:  # its answers still come back; it takes no more
                    await opened[1].done_writing()
                opened = upstreams[header.model] = (rt, rt.upstream.open_stream(metadata))
                drains.append(asyncio.create_task(drain(header.model, *opened)))
        except ControlPlaneError as exc:
            # unknown names too: the recorder counts them and stores nothing
            gateway.path.finish(header, arrived, Status.of(exc), True, time.time() - arrived,
                                None)
            await outbox.put(stream_error(exc.message, header.model, header.id,
                                          expose_tracebacks=gateway.expose_tracebacks))
            return
        if cold:
            wait_s = time.time() - arrived
        call = opened[1]
        version = choose(gateway.replicas.split(header.model), header.version)
        if version is not None:  # a rollout: the version named, never Triton's highest
            raw, header = with_version(raw, version), header._replace(version=version)
        if opened[0].upstream is not None:
            opened[0].upstream.requests += 1
        if header.id:
            pending[header.id] = (header, arrived, cold, wait_s)
        else:  # no id: the answer cannot be matched, latency unknown
            gateway.path.finish(header, arrived, Status.OK, cold, wait_s, None,
                                latency_known=False)
        await call.write(raw)

    async def pump() -> None:
        try:
            async for raw in requests:
                await forward(raw)
            for _, call in upstreams.values():
                await call.done_writing()
            await asyncio.gather(*drains)
        finally:
            await outbox.put(None)

    pumping = asyncio.create_task(pump())
    try:
        while (item := await outbox.get()) is not None:
            yield item
        await pumping  # raises what broke the stream, if anything did
    finally:
        pumping.cancel()
        for task in drains:
            task.cancel()
        for _, call in upstreams.values():
            call.cancel()
        for header, arrived, cold, wait_s in pending.values():
            gateway.path.finish(header, arrived, Status.OK, cold, wait_s, None,
                                latency_known=False)
