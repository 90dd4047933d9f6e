"""The one place where control-plane errors become gRPC statuses."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from controlplane.errors import ControlPlaneError, ErrorCode

GRPC_STATUS = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}


def grpc_status(exc: ControlPlaneError) -> grpc.StatusCode:
    return GRPC_STATUS[exc.code]


async def abort(context: Any, exc: ControlPlaneError) -> NoReturn:
    """``context`` is the handler's grpc.aio.ServicerContext."""
    await context.abort(grpc_status(exc), exc.message)
    raise AssertionError("unreachable: abort raises")
