"""The one place where control-plane errors become HTTP statuses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from controlplane.errors import ControlPlaneError, ErrorCode, echo_name, shorten
from controlplane.store.writebehind import describe

HTTP_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RESOURCE_EXHAUSTED: 413,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
}


#: characters of an error message in a response: operators get Triton's whole reason,
#: tracebacks included, up to this (start and end kept, the middle cut)
MESSAGE_LIMIT = 64 << 10


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": shorten(message, MESSAGE_LIMIT), **extra}}


def install_error_handlers(app: FastAPI) -> None:
    async def control_plane_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ControlPlaneError)
        extra = {"model": echo_name(str(exc.model))} if hasattr(exc, "model") else {}
        return JSONResponse(error_body(exc.code.value, exc.message, **extra),
                            status_code=HTTP_STATUS[exc.code])

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body(ErrorCode.INVALID_ARGUMENT.value, problems),
                            status_code=422)

    async def store_error(_: Request, exc: Exception) -> JSONResponse:
        # a store read that escaped Database.call: SQLite's reason, never SQLAlchemy's
        # statement text (which can carry data), and 503: the store, not the request
        return JSONResponse(error_body(ErrorCode.UNAVAILABLE.value,
                                       f"the store failed: {describe(exc)}"), status_code=503)

    app.add_exception_handler(ControlPlaneError, control_plane_error)
    app.add_exception_handler(SQLAlchemyError, store_error)
    app.add_exception_handler(RequestValidationError, validation_error)
