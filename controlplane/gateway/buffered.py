"""What the gateway may hold of its clients' requests: one request, and all of them at once.

gRPC reads a message whole before a handler sees it (as Triton does, up to 2 GiB), so the
bounds act the moment a request arrives: a request over ``gateway.max_request_bytes``, or one
that would take the bytes held by every request in progress (waiting for a load, forwarded
upstream, its answer on the way back) over ``gateway.max_buffered_bytes``, is refused at once
with RESOURCE_EXHAUSTED naming the setting -- before it waits for anything, so a burst of
large requests cannot grow the process without bound. What the process holds for a request
is a small multiple of the bytes counted here (gRPC's receive buffers, our copy, the upstream
call's send buffers, the answer): ``bench/request_memory.py`` measures it.

After such a burst two things keep memory that is no longer used: a refused or failed
request's bytes stay reachable from its exception's traceback (a reference cycle) until
Python's cycle collector happens to run, and glibc keeps the freed pages of its arenas (the
many small buffers gRPC receives a message in). :class:`Buffered` collects the cycles and asks
glibc to give the pages back (``malloc_trim``) once the bytes held fall back to zero after a
large peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
from pathlib import Path

from controlplane.errors import ResourceExhausted

log = logging.getLogger(__name__)

#: the default total bound: this share of the memory the process may use. The process holds
#: up to about 3.5x the bytes counted here at the peak of a burst (bench/request_memory.py:
#: gRPC's buffers and copies of each request and its answer), so an eighth keeps even a
#: burst of the largest requests under half the memory
DEFAULT_SHARE = 0.125
#: a peak of held bytes above this, then zero: return freed memory to the OS
TRIM_AFTER_BYTES = 64 << 20
#: after the bytes held fell back to zero, seconds before each trim
TRIM_DELAYS_S = (1.0, 4.0)
#: requests from this size on are held until their answer has been sent (a done callback);
#: smaller ones until the handler returns (no callback on the hot path)
TRACK_UNTIL_SENT_BYTES = 1 << 20


def memory_limit_bytes() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit if lower
    (a container's ``memory.max``, cgroup v2; ``memory.limit_in_bytes``, v1)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_max_buffered_bytes() -> int:
    """``gateway.max_buffered_bytes`` when unset: an eighth of :func:`memory_limit_bytes`."""
    return int(memory_limit_bytes() * DEFAULT_SHARE)


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to ask
        ctypes.CDLL(name).malloc_trim(0)


class Buffered:
    """Request bytes held now, across requests, streams and front doors (loop-owned ints)."""

    def __init__(self, max_request_bytes: int, max_buffered_bytes: int) -> None:
        self.max_request_bytes = max_request_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.held = 0
        self.peak = 0
        #: requests refused for each bound (``/metrics``)
        self.refused = {"max_request_bytes": 0, "max_buffered_bytes": 0}
        self._since_trim = 0
        self._trimming: asyncio.Task[None] | None = None

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes or raise ResourceExhausted naming the bound."""
        if size > self.max_request_bytes:
            self.refused["max_request_bytes"] += 1
            raise ResourceExhausted(
                f"request of {size} bytes is over gateway.max_request_bytes "
                f"({self.max_request_bytes} bytes; WARMCTL_GATEWAY__MAX_REQUEST_BYTES)")
        if self.held + size > self.max_buffered_bytes:
            self.refused["max_buffered_bytes"] += 1
            raise ResourceExhausted(
                f"the gateway holds {self.held} bytes of requests in progress; {size} more "
                f"would pass gateway.max_buffered_bytes ({self.max_buffered_bytes} bytes; "
                "WARMCTL_GATEWAY__MAX_BUFFERED_BYTES): retry shortly")
        self.held += size
        self._since_trim = max(self._since_trim, self.held)
        self.peak = max(self.peak, self.held)

    def hold(self, size: int) -> None:
        """Count ``size`` more bytes without a check (an answer on its way back)."""
        self.held += size
        self._since_trim = max(self._since_trim, self.held)
        self.peak = max(self.peak, self.held)

    def give(self, size: int) -> None:
        self.held -= size
        if self.held == 0 and self._since_trim >= TRIM_AFTER_BYTES and (
                self._trimming is None or self._trimming.done()):
            self._trimming = asyncio.get_running_loop().create_task(
                self._trim(), name="malloc-trim")

    async def _trim(self) -> None:
        # a moment later: gRPC frees its send buffers after the last answer went out; and
        # again a few seconds on, for what its core threads and the stream buffers released
        # since (measured: a single trim sometimes left ~60 MiB held after a burst)
        for delay_s in TRIM_DELAYS_S:
            await asyncio.sleep(delay_s)
            if self.held != 0:
                return  # a new burst: its own end trims
            self._since_trim = 0
            # a refused or failed request's bytes stay reachable from its exception's
            # traceback (a reference cycle) until the cycle collector runs: now
            gc.collect()
            await asyncio.to_thread(_malloc_trim)
