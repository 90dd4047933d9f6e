"""Shared-memory registrations made through the gateway: state of the fleet, not of one Triton.

A client registers a region once, through the gateway, and its requests may then go to any
replica; a restarted tritonserver has no registrations at all (server#7396, #6112). So a
registration is sent to every instance whose Triton serves and kept here; an instance that
restarts or joins gets every kept registration again before it takes traffic (``restore``,
called by its supervisor before it turns live); an unregistration is sent everywhere and
forgotten. The status RPCs answer for the fleet: the union of the instances' regions, and
``regions()`` says which instance has which (``GET /fleet/shared-memory``).

Registrations are bounded (``MAX_REGIONS``): past it a registration is refused with
RESOURCE_EXHAUSTED, as a Triton would run out of mappings long before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from controlplane.errors import ResourceExhausted
from controlplane.types import InstanceName

log = logging.getLogger(__name__)

#: regions kept at most, per kind
MAX_REGIONS = 4096
#: (register, unregister, status) method names and request types per kind
KINDS: dict[str, tuple[str, str, str, Any, Any, Any]] = {
    "system": ("SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
               "SystemSharedMemoryStatus", service_pb2.SystemSharedMemoryRegisterRequest,
               service_pb2.SystemSharedMemoryUnregisterRequest,
               service_pb2.SystemSharedMemoryStatusResponse),
    "cuda": ("CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
             "CudaSharedMemoryStatus", service_pb2.CudaSharedMemoryRegisterRequest,
             service_pb2.CudaSharedMemoryUnregisterRequest,
             service_pb2.CudaSharedMemoryStatusResponse),
}
METHODS = {method: kind for kind, names in KINDS.items() for method in names[:3]}

#: one call to one instance: (instance, method, request bytes) -> Triton's answer bytes;
#: raises grpc.aio.AioRpcError as Triton answered
Send = Callable[[InstanceName, str, bytes], Awaitable[bytes]]


@dataclass
class Registration:
    kind: str
    name: str
    #: the register request as the client sent it
    request: bytes
    #: instances it is registered on now
    instances: set[InstanceName] = field(default_factory=set)


def _already(exc: grpc.aio.AioRpcError) -> bool:
    """Triton's answer to a region it has already (a paused Triton kept its registrations)."""
    return "already in manager" in (exc.details() or "")


class SharedMemoryRegistry:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._regions: dict[tuple[str, str], Registration] = {}

    def regions(self) -> list[dict[str, Any]]:
        return [{"kind": r.kind, "name": r.name, "instances": sorted(r.instances)}
                for r in self._regions.values()]

    async def register(self, method: str, request: bytes,
                       targets: Sequence[InstanceName]) -> bytes:
        """Register on every instance of ``targets``; kept once every one that answered took
        it. A refusal (bad key, size) is undone where it was taken and raised; an instance
        that is unreachable gets it when it is back."""
        kind = METHODS[method]
        name = KINDS[kind][3].FromString(request).name
        if (kind, name) not in self._regions and \
                sum(1 for k, _ in self._regions if k == kind) >= MAX_REGIONS:
            raise ResourceExhausted(f"{MAX_REGIONS} {kind} shared-memory regions are "
                                    "registered through the gateway: unregister some first")
        answers = await asyncio.gather(*(self._send(t, method, request) for t in targets),
                                       return_exceptions=True)
        taken = [t for t, a in zip(targets, answers, strict=True)
                 if isinstance(a, bytes) or (isinstance(a, grpc.aio.AioRpcError) and _already(a))]
        refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError) and not _already(a)
                   and a.code() is not grpc.StatusCode.UNAVAILABLE]
        if refused or not taken:
            if taken:  # all or nothing: a region one replica lacks fails requests there
                await self._unregister(kind, name, taken)
            first = refused[0] if refused else next(a for a in answers
                                                     if isinstance(a, BaseException))
            raise first
        self._regions[(kind, name)] = Registration(kind, name, request, set(taken))
        return next(a for a in answers if isinstance(a, bytes)) if any(
            isinstance(a, bytes) for a in answers) else b""

    async def unregister(self, method: str, request: bytes,
                         targets: Sequence[InstanceName]) -> bytes:
        """Unregister (one region by name, or every region when the name is empty) on every
        instance; forgotten here whatever they answer (the first answer is returned)."""
        kind = METHODS[method]
        name = KINDS[kind][4].FromString(request).name
        for key in [k for k in self._regions if k[0] == kind and (not name or k[1] == name)]:
            del self._regions[key]
        answers = await asyncio.gather(*(self._send(t, method, request) for t in targets),
                                       return_exceptions=True)
        for answer in answers:
            if isinstance(answer, bytes):
                return answer
        raise next(a for a in answers if isinstance(a, BaseException))

    async def _unregister(self, kind: str, name: str, targets: Sequence[InstanceName]) -> None:
        request = bytes(KINDS[kind][4](name=name).SerializeToString())
        await asyncio.gather(*(self._send(t, KINDS[kind][1], request) for t in targets),
                             return_exceptions=True)

    async def status(self, method: str, request: bytes,
                     targets: Sequence[InstanceName]) -> bytes:
        """The union of the instances' answers (a region on several instances once)."""
        kind = METHODS[method]
        answers = await asyncio.gather(*(self._send(t, method, request) for t in targets),
                                       return_exceptions=True)
        merged = KINDS[kind][5]()
        found = False
        for answer in answers:
            if isinstance(answer, bytes):
                found = True
                for region, status in KINDS[kind][5].FromString(answer).regions.items():
                    if region not in merged.regions:
                        merged.regions[region].CopyFrom(status)
        if not found:
            raise next(a for a in answers if isinstance(a, BaseException))
        return bytes(merged.SerializeToString())

    async def restore(self, instance: InstanceName) -> None:
        """Register everything kept on ``instance`` (it restarted or joined), before it takes
        traffic. A region Triton refuses now (the client removed it) is logged and left out
        on that instance."""
        for reg in list(self._regions.values()):
            method = KINDS[reg.kind][0]
            try:
                await self._send(instance, method, reg.request)
            except grpc.aio.AioRpcError as exc:
                if not _already(exc):
                    reg.instances.discard(instance)
                    log.warning("shared-memory region %r not registered again on %s: %s",
                                reg.name, instance, exc.details())
                    continue
            reg.instances.add(instance)

    def forget(self, instance: InstanceName) -> None:
        """``instance`` stopped: it has no registrations any more."""
        for reg in self._regions.values():
            reg.instances.discard(instance)
