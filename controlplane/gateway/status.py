"""The one place where control-plane errors become gRPC statuses, and error text client-safe."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from controlplane.errors import (
    ControlPlaneError,
    ErrorCode,
    shorten,
    strip_paths,
    strip_torchscript,
    strip_traceback,
)

GRPC_STATUS = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

#: bytes of a status message on the wire. gRPC sends it percent-encoded in a header, and a
#: client drops the whole response past ~8 KiB of headers ("received metadata size exceeds
#: limit"), leaving it with no reason at all; Triton's load errors with a traceback pass that.
STATUS_MESSAGE_LIMIT = 4096


def _wire_bytes(ch: str) -> int:
    """Bytes one character takes in ``grpc-message`` (percent-encoding outside printable
    ASCII and for ``%`` itself)."""
    if " " <= ch <= "~" and ch != "%":
        return 1
    return 3 * len(ch.encode("utf-8", "surrogatepass"))


def client_message(text: str, *, expose_tracebacks: bool = False,
                   limit: int = STATUS_MESSAGE_LIMIT) -> str:
    """An error text as a gRPC client gets it: without Python stack frames, TorchScript's
    code listing and server paths (unless ``expose_tracebacks``), at most ``limit`` bytes
    once encoded, start and end kept. The whole text stays in the log and the load record."""
    if not expose_tracebacks:
        # Triton's log quotes a reason with its newlines escaped: unescaped, its stack
        # frames are found and cut like any others
        text = text.replace("\\n", "\n")
        text = strip_paths(strip_torchscript(strip_traceback(text)))
    return shorten(text, limit, cost=_wire_bytes)


def grpc_status(exc: ControlPlaneError) -> grpc.StatusCode:
    return GRPC_STATUS[exc.code]


async def abort(context: Any, exc: ControlPlaneError, *,
                expose_tracebacks: bool = False) -> NoReturn:
    """``context`` is the handler's grpc.aio.ServicerContext."""
    await context.abort(grpc_status(exc),
                        client_message(exc.message, expose_tracebacks=expose_tracebacks))
    raise AssertionError("unreachable: abort raises")


async def abort_upstream(context: Any, exc: grpc.aio.AioRpcError, *,
                         expose_tracebacks: bool = False) -> NoReturn:
    """Answer with the status and (client-safe) message Triton answered us with."""
    await context.abort(exc.code(), client_message(exc.details() or "",
                                                   expose_tracebacks=expose_tracebacks))
    raise AssertionError("unreachable: abort raises")
