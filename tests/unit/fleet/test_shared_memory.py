"""Shared-memory registrations as fleet state: everywhere or nowhere, restored, merged."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2

from controlplane.errors import ResourceExhausted
from controlplane.fleet import shared_memory
from controlplane.fleet.shared_memory import SharedMemoryRegistry


class RpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeTritons:
    """Each instance's registered system regions, answering like Triton."""

    def __init__(self, *names: str) -> None:
        self.regions: dict[str, dict[str, Any]] = {n: {} for n in names}
        self.down: set[str] = set()
        self.refuse_key: str | None = None

    async def send(self, instance: str, method: str, request: bytes) -> bytes:
        if instance in self.down:
            raise RpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")
        mine = self.regions[instance]
        if method == "SystemSharedMemoryRegister":
            r = service_pb2.SystemSharedMemoryRegisterRequest.FromString(request)
            if r.key == self.refuse_key:
                raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"Unable to open {r.key}")
            if r.name in mine:
                raise RpcError(grpc.StatusCode.ALREADY_EXISTS,
                               f"shared memory region '{r.name}' already in manager")
            mine[r.name] = (r.key, r.byte_size)
            return b""
        if method == "SystemSharedMemoryUnregister":
            name = service_pb2.SystemSharedMemoryUnregisterRequest.FromString(request).name
            for key in [k for k in mine if not name or k == name]:
                del mine[key]
            return b""
        answer = service_pb2.SystemSharedMemoryStatusResponse()
        for name, (key, size) in mine.items():
            answer.regions[name].name, answer.regions[name].key = name, key
            answer.regions[name].byte_size = size
        return bytes(answer.SerializeToString())


def register(name: str, key: str = "/k") -> bytes:
    return bytes(service_pb2.SystemSharedMemoryRegisterRequest(
        name=name, key=key, byte_size=16).SerializeToString())


async def test_registered_everywhere_restored_after_a_restart_and_status_merged() -> None:
    tritons = FakeTritons("a", "b")
    registry = SharedMemoryRegistry(tritons.send)
    await registry.register("SystemSharedMemoryRegister", register("in"), ["a", "b"])
    assert tritons.regions["a"] == tritons.regions["b"] == {"in": ("/k", 16)}
    tritons.regions["a"].clear()  # a's tritonserver restarted: it has none
    registry.forget("a")
    assert registry.regions() == [{"kind": "system", "name": "in", "instances": ["b"]}]
    await registry.restore("a")
    assert tritons.regions["a"] == {"in": ("/k", 16)}
    await registry.restore("b")  # a paused Triton kept it: "already in manager" is fine
    assert registry.regions()[0]["instances"] == ["a", "b"]
    tritons.regions["b"]["other"] = ("/o", 16)
    status = service_pb2.SystemSharedMemoryStatusResponse.FromString(
        await registry.status("SystemSharedMemoryStatus", b"", ["a", "b"]))
    assert sorted(status.regions) == ["in", "other"]
    unregister = service_pb2.SystemSharedMemoryUnregisterRequest().SerializeToString()
    await registry.unregister("SystemSharedMemoryUnregister", unregister, ["a", "b"])
    assert registry.regions() == [] and tritons.regions == {"a": {}, "b": {}}


async def test_a_refused_registration_is_undone_where_it_was_taken() -> None:
    tritons = FakeTritons("a", "b")
    registry = SharedMemoryRegistry(tritons.send)
    tritons.down.add("b")  # unreachable now: it gets it when it is back
    await registry.register("SystemSharedMemoryRegister", register("in"), ["a", "b"])
    assert registry.regions()[0]["instances"] == ["a"]
    tritons.down.clear()
    tritons.refuse_key = "/bad"

    async def refusing_b(instance: str, method: str, request: bytes) -> bytes:
        if instance == "b" and method == "SystemSharedMemoryRegister":
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "Unable to open /bad2")
        return await tritons.send(instance, method, request)

    registry._send = refusing_b
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await registry.register("SystemSharedMemoryRegister", register("x", "/bad2"),
                                ["a", "b"])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "x" not in tritons.regions["a"]  # all or nothing
    assert [r["name"] for r in registry.regions()] == ["in"]


async def test_registrations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_memory, "MAX_REGIONS", 2)
    tritons = FakeTritons("a")
    registry = SharedMemoryRegistry(tritons.send)
    for name in ("r1", "r2"):
        await registry.register("SystemSharedMemoryRegister", register(name), ["a"])
    with pytest.raises(ResourceExhausted, match="2 system shared-memory regions"):
        await registry.register("SystemSharedMemoryRegister", register("r3"), ["a"])
