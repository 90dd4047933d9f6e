"""Whether the store takes writes now: ``ok``, ``unwritable`` or ``stalled``.

Two witnesses. The write probe rewrites one row every ``interval_s`` on a thread of its own
(never the event loop, never the pool that admin reads share): an error says unwritable, no
answer within ``stall_after_s`` says stalled, and it sees a fault even while nothing else is
written. The write-behind queue says what real writes meet: a small probe can still succeed
on a full disk (SQLite reuses its WAL file's space) while a traffic batch that needs more
fails, so a failing queue makes the store unwritable whatever the probe says. Reading the
state costs nothing: ``/healthz`` and ``/metrics`` never wait for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from controlplane.store.database import Database
from controlplane.store.dialect import upsert
from controlplane.store.models import StoreProbe
from controlplane.store.writebehind import describe

log = logging.getLogger(__name__)

StoreState = Literal["ok", "unwritable", "stalled"]


@dataclass(frozen=True)
class StoreStatus:
    state: StoreState
    #: why not ok, in words (None when ok)
    reason: str | None


class StoreHealth:
    """The probe loop (``start``/``close``) and the store's state (``status``)."""

    def __init__(self, database: Database, *, interval_s: float = 2.0,
                 stall_after_s: float = 3.0) -> None:
        """``interval_s``: between probes, seconds. ``stall_after_s``: a probe or a queued
        write running this long counts as stalled (a healthy probe takes milliseconds; a
        large traffic batch can take a second or two on a busy disk)."""
        self.db = database
        self.interval_s = interval_s
        self.stall_after_s = stall_after_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-probe")
        self._running: Future[None] | None = None
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None
        #: the last probe's error (None: it succeeded), and when the last one succeeded
        self.probe_error: str | None = None
        self.last_ok: float | None = None
        self.probes = 0
        self.last_latency_s: float | None = None

    def _probe(self) -> None:
        with self.db.session() as session:
            upsert(session, StoreProbe, {"id": 1, "at": time.time()}, key=["id"],
                   update=lambda new: {"at": new.at})

    async def probe_once(self) -> None:
        """Start a probe unless one is still running (a stalled disk holds it), and wait
        for it up to ``stall_after_s``."""
        running = self._running
        if running is None or running.done():
            self._started_at = time.monotonic()
            running = self._running = self._thread.submit(self._probe)
        with contextlib.suppress(Exception):  # its error is read from the future below
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)),
                                   self.stall_after_s)
        if not running.done():
            return  # stalled: ``status`` says so from the age of the running probe
        self.probes += 1
        error = running.exception()
        if error is None:
            self.last_ok = time.time()
            self.last_latency_s = time.monotonic() - self._started_at
            if self.probe_error is not None:
                log.warning("the store's write probe succeeds again")
            self.probe_error = None
        else:
            if self.probe_error is None:
                log.warning("the store's write probe failed: %s", describe(error))
            self.probe_error = describe(error)

    async def _loop(self) -> None:
        while True:
            try:
                await self.probe_once()
            except Exception:  # never the end of the probe: it is how faults are seen
                log.exception("store probe")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="store-probe")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.shutdown(wait=False)

    def status(self) -> StoreStatus:
        """The state now, from the probe and the queue (no I/O)."""
        now, writes = time.monotonic(), self.db.writes
        running = self._running
        if running is not None and not running.done() and (
                now - self._started_at > self.stall_after_s):
            return StoreStatus("stalled", f"a probe write has not returned for "
                                          f"{now - self._started_at:.0f}s")
        if writes.running_since is not None and now - writes.running_since > self.stall_after_s:
            return StoreStatus("stalled", f"a queued write has not returned for "
                                          f"{now - writes.running_since:.0f}s")
        if writes.error is not None:
            return StoreStatus("unwritable", f"queued writes fail: {writes.error}")
        if self.probe_error is not None:
            return StoreStatus("unwritable", f"the write probe fails: {self.probe_error}")
        return StoreStatus("ok", None)

    def snapshot(self) -> dict[str, Any]:
        """What ``/healthz`` shows of the store."""
        status, writes = self.status(), self.db.writes
        return {
            "state": status.state, "reason": status.reason,
            "probe": {"runs": self.probes, "last_ok": self.last_ok,
                      "latency_ms": None if self.last_latency_s is None
                      else round(self.last_latency_s * 1e3, 1),
                      "last_error": self.probe_error},
            "queued": {k: n for k, n in writes.queued_weight.items() if n},
            "oldest_queued_s": round(writes.oldest_s, 1),
            "written": dict(writes.written),
            "dropped": {f"{kind}/{why}": n for (kind, why), n in writes.dropped.items()},
        }
