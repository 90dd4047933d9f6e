"""The outcome of a request in our own vocabulary, and what each transport makes of it.

The names are gRPC's status names (KServe v2's gRPC protocol speaks them, Triton answers with
them, and the recorder stores them as outcomes); HTTP maps them to status codes the way
Triton's HTTP front end does (404 for an unknown model, 503 for one that cannot serve now,
400 for a malformed request). Each front door converts once, in one place.
"""

from __future__ import annotations

from enum import StrEnum

from controlplane.errors import ControlPlaneError, ErrorCode


class Status(StrEnum):
    OK = "OK"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    DATA_LOSS = "DATA_LOSS"
    UNAUTHENTICATED = "UNAUTHENTICATED"

    @classmethod
    def of(cls, exc: ControlPlaneError) -> Status:
        return _OF_CODE[exc.code]

    @classmethod
    def named(cls, name: str) -> Status:
        """A gRPC status name as ours (UNKNOWN for one we do not know)."""
        try:
            return cls(name)
        except ValueError:
            return cls.UNKNOWN

    @property
    def error_code(self) -> ErrorCode:
        """Ours, for an error a replica answered with (INTERNAL where we have none)."""
        return next((code for code, status in _OF_CODE.items() if status is self),
                    ErrorCode.INTERNAL)

    @property
    def http(self) -> int:
        """The HTTP status a KServe-v2 REST client expects for it."""
        return _HTTP.get(self, 500)


_OF_CODE = {
    ErrorCode.INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: Status.NOT_FOUND,
    ErrorCode.CONFLICT: Status.FAILED_PRECONDITION,
    ErrorCode.UNAVAILABLE: Status.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: Status.DEADLINE_EXCEEDED,
    ErrorCode.PERMISSION_DENIED: Status.PERMISSION_DENIED,
    ErrorCode.RESOURCE_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
    ErrorCode.INTERNAL: Status.INTERNAL,
}

_HTTP = {
    Status.OK: 200, Status.CANCELLED: 499, Status.INVALID_ARGUMENT: 400,
    Status.DEADLINE_EXCEEDED: 504, Status.NOT_FOUND: 404, Status.ALREADY_EXISTS: 409,
    Status.PERMISSION_DENIED: 403, Status.RESOURCE_EXHAUSTED: 429,
    Status.FAILED_PRECONDITION: 409, Status.ABORTED: 409, Status.OUT_OF_RANGE: 400,
    Status.UNIMPLEMENTED: 501, Status.INTERNAL: 500, Status.UNAVAILABLE: 503,
    Status.UNAUTHENTICATED: 401,
}

#: HTTP statuses Triton's HTTP front end answers with, in our vocabulary (what a retry and the
#: record need to know of an upstream HTTP error)
FROM_HTTP = {400: Status.INVALID_ARGUMENT, 403: Status.PERMISSION_DENIED,
             404: Status.NOT_FOUND, 409: Status.ALREADY_EXISTS,
             413: Status.RESOURCE_EXHAUSTED, 429: Status.RESOURCE_EXHAUSTED,
             499: Status.CANCELLED, 500: Status.INTERNAL, 501: Status.UNIMPLEMENTED,
             502: Status.UNAVAILABLE, 503: Status.UNAVAILABLE, 504: Status.DEADLINE_EXCEEDED}
