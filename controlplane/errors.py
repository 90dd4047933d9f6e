"""One error type for the whole control plane.

Every failure a caller can see is a :class:`ControlPlaneError` with an :class:`ErrorCode`.
The transports map the code to their own status in exactly one place each
(``gateway/status.py`` for gRPC, ``admin/errors.py`` for HTTP); nothing else decides statuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
    #: the request is larger than allowed
    RESOURCE_EXHAUSTED = "resource_exhausted"
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
        # Triton's own phrase: clients (NVIDIA's examples among them) look for it
        super().__init__(f"Request for unknown model: '{echo_name(model)}' is not found")
        self.model = model


class InstanceNotFound(ControlPlaneError):
    """No Triton instance of the fleet has this name."""

    code = ErrorCode.NOT_FOUND

    def __init__(self, instance: str, known: list[str]) -> None:
        super().__init__(f"unknown instance '{echo_name(instance)}'; instances: "
                         + ", ".join(known))
        self.instance = instance


class Conflict(ControlPlaneError):
    code = ErrorCode.CONFLICT


class HeldCold(Conflict):
    """An automatic load of a model the operator unloaded (held cold until the operator
    loads or releases it)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"model '{echo_name(model)}' was unloaded by the operator and is held "
                         "cold until the operator loads or releases it")
        self.model = model


class TritonUnavailable(ControlPlaneError):
    """Triton cannot be reached, or answered with an error we cannot attribute to the request."""

    code = ErrorCode.UNAVAILABLE


class ModelLoadFailed(ControlPlaneError):
    """Triton refused or failed a load; ``reason`` is Triton's own message."""

    code = ErrorCode.UNAVAILABLE

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model '{echo_name(model)}' failed to load: {reason}")
        self.model = model
        self.reason = reason


class DeadlineExceeded(ControlPlaneError):
    code = ErrorCode.DEADLINE_EXCEEDED


class TritonStartError(ControlPlaneError):
    """The embedded tritonserver did not come up; the message carries its log tail."""

    code = ErrorCode.UNAVAILABLE


class StoreUnavailable(ControlPlaneError):
    """The store (SQLite) cannot answer now: its disk is full, read-only, failing or stalled.
    Only what needs the store's answer fails so (admin reads); writes are queued."""

    code = ErrorCode.UNAVAILABLE


class ResourceExhausted(ControlPlaneError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class PermissionDenied(ControlPlaneError):
    code = ErrorCode.PERMISSION_DENIED


# -- error text that reaches clients ----------------------------------------------------------

#: longest name (model, input) an error message repeats in full
NAME_ECHO_LIMIT = 100


def echo_name(name: str, limit: int = NAME_ECHO_LIMIT) -> str:
    """``name`` as an error message may repeat it: whole when short and printable, else its
    escaped start and its length, so a client's megabyte-long name does not come back."""
    if not name.isprintable():
        name = name.encode("unicode_escape").decode("ascii")
    if len(name) <= limit:
        return name
    return f"{name[:limit]}...({len(name)} characters)"


# Triton's Python backend appends the stack as "\n\nAt:\n  <file>(<line>): <function>\n" per
# frame; a model may also put a standard "Traceback (most recent call last):" in its message.
_BACKEND_FRAMES = re.compile(r"\n*At:\n(?:  [^\n]*(?:\n|$))+")
_PYTHON_FRAMES = re.compile(r"Traceback \(most recent call last\):\n(?:[ \t][^\n]*(?:\n|$))+")


#: TorchScript puts the model's serialized (and original) code in its runtime errors, then the
#: error itself on a line of its own, e.g. "RuntimeError: index out of range in self"
_TORCHSCRIPT = "The following operation failed in the TorchScript interpreter."
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b:? ?")
#: an absolute server path (not a URL's): two or more components
_SERVER_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"():,;<>|]+/)+([^\s/'\"():,;<>|]+)")


def strip_torchscript(text: str) -> str:
    """``text`` without TorchScript's code listing: the text before it and the error line
    after it are kept (a client sees "RuntimeError: index out of range in self", not the
    model's code)."""
    at = text.find(_TORCHSCRIPT)
    if at < 0:
        return text
    lines = text[at:].splitlines()
    rest = next((i for i, line in enumerate(lines[1:], 1) if _ERROR_LINE.match(line)), None)
    tail = "\n".join(lines[rest:]) if rest is not None else ""
    return (text[:at] + tail).rstrip()


def strip_paths(text: str) -> str:
    """Absolute server paths cut to their last component (``.../model.py``)."""
    return _SERVER_PATH.sub(r".../\1", text)


def strip_traceback(text: str) -> str:
    """``text`` without Python stack frames, keeping the root cause line.

    ``"...message: ValueError: bad id\n\nAt:\n  /models/m/1/model.py(8): execute\n"`` becomes
    ``"...message: ValueError: bad id"``: the frames name files and code of the server, which a
    client need not see.
    """
    return _PYTHON_FRAMES.sub("", _BACKEND_FRAMES.sub("", text)).rstrip("\n")


def shorten(text: str, limit: int, *, cost: Callable[[str], int] | None = None) -> str:
    """``text`` within ``limit`` units (characters, or ``cost`` per character): its start and
    its end, where an error's root cause and its innermost frame are, with the middle cut and
    the cut said. Looks at no more than ``limit`` characters from each end.
    """
    weigh = cost or (lambda _: 1)
    spent = 0
    for ch in text:
        spent += weigh(ch)
        if spent > limit:
            break
    else:
        return text
    marker = f" [...{len(text)} characters in all, middle cut...] "
    budget = limit - sum(weigh(ch) for ch in marker)
    if budget <= 0:
        return _take(text, limit, weigh)
    head_budget = budget * 2 // 3
    tail_budget = budget - head_budget
    head = _take(text, head_budget, weigh)
    # every character costs at least 1: the tail lies within the last ``tail_budget`` ones
    tail = _take(text[len(text) - tail_budget:][::-1], tail_budget, weigh)[::-1]
    return head + marker + tail


def _take(text: str, budget: int, weigh: Callable[[str], int]) -> str:
    spent = 0
    for i, ch in enumerate(text):
        spent += weigh(ch)
        if spent > budget:
            return text[:i]
    return text
