"""The embedded tritonserver's log: opened at each start (the previous one kept as ``.1``),
read back for Triton's own reason of a failed load and for start-up errors.

It lives in the data directory; when that takes no writes (disk full, read-only), the server
logs to a temporary file instead: a Triton restart must not depend on the data disk, or a
storage fault would take every model down with it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections import deque
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


def open_server_log(path: Path) -> tuple[Path, BinaryIO]:
    """(where the log goes, the open file): ``path``, or a temporary file if ``path``
    cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.replace(path.with_suffix(path.suffix + ".1"))
        return path, path.open("wb")
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"warmctl-{os.getpid()}-{path.name}"
        log.warning("cannot write Triton's log %s (%s): it logs to %s until its next start",
                    path, exc.strerror, fallback)
        return fallback, fallback.open("wb")


def error_lines(path: Path, needle: str, *, max_bytes: int = 256 * 1024) -> list[str]:
    """Error-level log messages that mention ``needle``, oldest first (from the log's end)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_bytes))
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    messages = []
    for line in text.splitlines():
        if line.startswith("E") and needle in line:
            _, _, message = line.partition("] ")
            messages.append(message.strip().strip('"'))
    return messages


#: What Triton's fatal-signal handler writes first ("Signal (6) received."), before a stack
#: trace. After heap corruption the handler can deadlock in malloc: the process then neither
#: exits nor stops answering its liveness endpoint, and only its log says it is gone. Its
#: shutdown handler writes the same for SIGINT and SIGTERM (2, 15: a stop), so only the
#: signals of a fault count: SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGSEGV.
FATAL_SIGNAL = re.compile(rb"^Signal \((?:4|6|7|8|11)\) received\.", re.MULTILINE)


def fatal_signal(path: Path, start: int, *, max_bytes: int = 256 * 1024) -> tuple[str | None,
                                                                                   int]:
    """(the first fatal-signal line written at or after byte ``start`` of the log, or None;
    where the next read starts: after the last whole line read). Reads at most the last
    ``max_bytes``."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            if size <= start:
                return None, start
            at = fh.seek(max(start, size - max_bytes))
            text = fh.read(size - at)
    except OSError:
        return None, start
    found = FATAL_SIGNAL.search(text)
    if found is not None:
        return found.group(0).decode(), size
    return None, at + text.rfind(b"\n") + 1  # a line being written is read whole next time


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as fh:
            tail = deque(fh, maxlen=lines)
    except OSError:
        return "<no log>"
    return b"".join(tail).decode(errors="replace")
