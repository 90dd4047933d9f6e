"""One error type for the whole control plane.

Every failure a caller can see is a :class:`ControlPlaneError` with an :class:`ErrorCode`.
The transports map the code to their own status in exactly one place each
(``gateway/status.py`` for gRPC, ``admin/errors.py`` for HTTP); nothing else decides statuses.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    #: the request is valid but the model's state refuses it now (e.g. unload while pinned)
    CONFLICT = "conflict"
    #: Triton is down, or a model could not be loaded
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    PERMISSION_DENIED = "permission_denied"
    INTERNAL = "internal"


class ControlPlaneError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ControlPlaneError):
    code = ErrorCode.INVALID_ARGUMENT


class ConfigError(InvalidArgument):
    """A configuration (ours, or a model's config.pbtxt) is malformed."""


class ModelNotFound(ControlPlaneError):
    code = ErrorCode.NOT_FOUND

    def __init__(self, model: str) -> None:
        super().__init__(f"unknown model '{model}'")
        self.model = model


class Conflict(ControlPlaneError):
    code = ErrorCode.CONFLICT


class TritonUnavailable(ControlPlaneError):
    """Triton cannot be reached, or answered with an error we cannot attribute to the request."""

    code = ErrorCode.UNAVAILABLE


class ModelLoadFailed(ControlPlaneError):
    """Triton refused or failed a load; ``reason`` is Triton's own message."""

    code = ErrorCode.UNAVAILABLE

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model '{model}' failed to load: {reason}")
        self.model = model
        self.reason = reason


class DeadlineExceeded(ControlPlaneError):
    code = ErrorCode.DEADLINE_EXCEEDED


class TritonStartError(ControlPlaneError):
    """The embedded tritonserver did not come up; the message carries its log tail."""

    code = ErrorCode.UNAVAILABLE
