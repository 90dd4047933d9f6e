"""What a client is told when its request fails in the plugin, and what the log keeps.

A client gets the exception's type and message, and nothing else: the text travels in a gRPC
status (metadata: an 8 KB reason never arrives), it is shown to people who do not own the
server, and a TorchScript error embeds the model's serialized code and the server's file
paths (about 2,100 characters for one out-of-range id). So ``client_text`` keeps the final
error line(s) of a TorchScript traceback, replaces absolute paths by their file name, makes
the text valid UTF-8 without control characters, and bounds it to ``MAX_CLIENT_CHARS``.
``log_text`` is the full story (with the Python traceback) for the stub's log, which ends up
in Triton's.

Pure functions (no torch, no pb_utils): unit-tested on their own.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable

MAX_CLIENT_CHARS = 1000
MAX_LOG_CHARS = 20_000

#: the header torch puts before a TorchScript traceback (serialized and original code)
_TS_MARKER = "Traceback of TorchScript"
_TS_HEADER = "The following operation failed in the TorchScript interpreter."
#: a line that starts an exception's text: ``RuntimeError: ...``, ``builtins.ValueError: ...``
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)(?::|$)")
#: an absolute path with at least one folder; the file name alone is kept
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+~-]+/)+([\w.@+~-]+)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def client_text(exc: BaseException, limit: int = MAX_CLIENT_CHARS) -> str:
    """``Type: message`` for a client: bounded, valid UTF-8, no TorchScript code, no paths."""
    message = _torchscript_error(str(exc))
    if not _ERROR_LINE.match(message):
        message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    message = message.removeprefix("builtins.")
    return bounded(_PATH.sub(r"\1", message), limit)


def log_text(exc: BaseException, context: str) -> str:
    """The whole exception with its Python traceback, for the server's log (bounded too: a
    client that sends bad requests in a loop must not fill the disk at 2 KB a request)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return bounded(f"{context}: {text}", MAX_LOG_CHARS)


def bounded(text: str, limit: int) -> str:
    """``text`` as valid UTF-8 without control characters (newlines and tabs stay), at most
    ``limit`` characters: its start and its end, where the error lines are."""
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates from C messages
    text = _CONTROL.sub("?", text).strip()
    if len(text) <= limit:
        return text
    marker = " [...] "
    head = (limit - len(marker)) * 2 // 3
    return text[:head] + marker + text[len(text) - (limit - len(marker) - head):]


def _torchscript_error(message: str) -> str:
    """The final error line(s) of a TorchScript interpreter error; other messages unchanged.

    torch's text is: a header, ``Traceback of TorchScript, serialized code`` with the saved
    module's code, often ``Traceback of TorchScript, original code`` with the author's
    source and paths, then the error. Every frame ends at its ``<--- HERE`` marker plus a
    few indented lines of context; the error starts at the first line after the last marker
    that reads like an exception (``RuntimeError: ...``).
    """
    if _TS_MARKER not in message and _TS_HEADER not in message:
        return message.strip()
    lines = message.strip().splitlines()
    last_marker = max((i for i, line in enumerate(lines) if "<--- HERE" in line), default=-1)
    tail = lines[last_marker + 1:]
    for i, line in enumerate(tail):
        if _ERROR_LINE.match(line):
            return "\n".join(tail[i:]).strip()
    unindented = [line for line in tail if line.strip() and not line[:1].isspace()
                  and _TS_MARKER not in line and _TS_HEADER not in line]
    return unindented[-1].strip() if unindented else "TorchScript interpreter error"


class LogLimiter:
    """At most ``limit`` full failure logs per ``window_s``: a client looping on a bad
    request gets every answer, the log gets a sample and the count of what it skipped."""

    def __init__(self, limit: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._start = clock()
        self._logged = 0
        self.skipped = 0

    def allow(self) -> bool:
        now = self.clock()
        if now - self._start >= self.window_s:
            self._start, self._logged = now, 0
        if self._logged >= self.limit:
            self.skipped += 1
            return False
        self._logged += 1
        return True

    def note(self) -> str:
        """What the log line should add: failures skipped since the last logged one."""
        skipped, self.skipped = self.skipped, 0
        return f"{skipped} more not logged before this one" if skipped else "logged in full"
