"""Write-behind: what must be stored is queued in bounded memory and written in order by one
writer, so that no load, unload, request or admin call fails or waits on the disk.

Callers ``submit`` a blocking write (a function the writer runs on the database's write
thread) under a ``kind`` (``state``, ``event``, ``traffic`` ...) and get a future that says
how it ended. The writer takes the queue's head, runs it, and only then the next one: the
order of submission is the order of writing. A storage error (disk full, read-only, I/O
error, locked) leaves the head in place and the writer retries it with back-off until the
store takes it; any other error means the write can never succeed (a bug, a vanished row),
so it is dropped and counted. Each kind holds at most ``max_queued`` writes: beyond that a new
one is dropped and counted (``dropped``), never lost silently.

A ``key`` coalesces: while a write with the same key waits, a second one is not queued (the
waiting one reads the latest value when it runs, e.g. a model's state row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

#: how a queued write ended: written, or dropped because its kind's bound was reached
#: (``full``), it can never succeed (``error``), or the process stopped first (``stopped``)
Outcome = Literal["written", "full", "error", "stopped"]
Runner = Callable[[Callable[[], object]], Awaitable[object]]

#: first retry of a failing write after this, doubled per failure up to ``RETRY_MAX_S``:
#: the disk coming back is seen within seconds, without hammering a failing one
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 4.0


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot take writes now (retry later), rather than that
    this write is wrong (``sqlite3.OperationalError``: full, read-only, I/O, locked)."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, OSError | TimeoutError | sqlite3.OperationalError)


def describe(exc: BaseException) -> str:
    """A storage error in a few words: SQLite's own message, without SQLAlchemy's statement
    and parameters (which can be long and carry data)."""
    orig = getattr(exc, "orig", None)
    if orig is not None:
        return str(orig)[:300]
    if isinstance(exc, TimeoutError):
        return "no answer in time (stalled)"
    return f"{type(exc).__name__}: {exc}"[:300]


@dataclass(eq=False)
class _Write:
    kind: str
    run: Callable[[], object]
    weight: int
    key: Hashable | None
    done: asyncio.Future[Outcome]
    queued_at: float = field(default_factory=time.monotonic)


class WriteBehind:
    """One ordered, bounded queue of writes and its writer (an asyncio task, started on the
    first submit and ended when the queue is empty)."""

    def __init__(self, run: Runner, *, max_queued: int = 10_000,
                 settle_s: float = 1.0) -> None:
        """``run``: awaits a blocking function on the database's write thread. ``max_queued``:
        writes held per kind at most. ``settle_s``: longest wait of :meth:`settle`."""
        self._run = run
        self.max_queued = max_queued
        self.settle_s = settle_s
        self._queue: deque[_Write] = deque()
        self._waiting: dict[Hashable, _Write] = {}
        self._task: asyncio.Task[None] | None = None
        #: per kind: writes queued now, and their weight (records for traffic)
        self.queued: Counter[str] = Counter()
        self.queued_weight: Counter[str] = Counter()
        #: per kind: weight written; per (kind, outcome): weight dropped
        self.written: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, Outcome]] = Counter()
        #: the last storage error, None once a write succeeded after it
        self.error: str | None = None
        self.failing_since: float | None = None
        #: monotonic start of the write running now (None: none)
        self.running_since: float | None = None
        self._closed = False

    # -- submitting -------------------------------------------------------------------------
    def submit(self, kind: str, run: Callable[[], object], *, weight: int = 1,
               key: Hashable | None = None) -> asyncio.Future[Outcome]:
        """Queue ``run`` (blocking; runs on the write thread). Never blocks, never raises.
        ``weight``: what it counts for in ``written``/``dropped`` (e.g. records)."""
        if key is not None and (waiting := self._waiting.get(key)) is not None:
            return waiting.done
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        write = _Write(kind, run, weight, key, done)
        if self._closed or self.queued[kind] >= self.max_queued:
            self._end(write, "stopped" if self._closed else "full")
            return done
        self._queue.append(write)
        self.queued[kind] += 1
        self.queued_weight[kind] += weight
        if key is not None:
            self._waiting[key] = write
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._writer(), name="store-writer")
        return done

    @property
    def healthy(self) -> bool:
        """The last write succeeded and none has been running for ``settle_s``."""
        busy = self.running_since is not None and (
            time.monotonic() - self.running_since > self.settle_s)
        return self.error is None and not busy

    async def settle(self, done: asyncio.Future[Outcome]) -> None:
        """Wait for a submitted write while the store is healthy, at most ``settle_s``: a
        healthy store keeps read-your-writes (the admin API shows a load's record once the
        load returns); a failing or stalled one costs the caller nothing."""
        if done.done() or not self.healthy:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), self.settle_s)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued now is written (or dropped); False on timeout."""
        pending = [w.done for w in self._queue]
        if not pending:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*pending), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float) -> Counter[tuple[str, Outcome]]:
        """Write what is queued within ``timeout_s``; the rest is dropped as ``stopped`` and
        returned (weight per kind), logged. Later submits are dropped as ``stopped``."""
        await self.drain(timeout_s)
        return self.abandon()

    def abandon(self) -> Counter[tuple[str, Outcome]]:
        """Stop now: every queued write is dropped as ``stopped`` (counted and returned)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed already
                self._task.cancel()
        left: Counter[tuple[str, Outcome]] = Counter()
        while self._queue:
            write = self._queue.popleft()
            self._dequeued(write)
            left[write.kind, "stopped"] += write.weight
            self._end(write, "stopped")
        if left:
            log.error("stopping with writes the store did not take (%s): %s",
                      self.error or "not written in time",
                      ", ".join(f"{kind} {n}" for (kind, _), n in sorted(left.items())))
        return left

    # -- the writer -------------------------------------------------------------------------
    async def _writer(self) -> None:
        failures = 0
        while self._queue:
            write = self._queue[0]
            if write.key is not None and self._waiting.get(write.key) is write:
                del self._waiting[write.key]  # running: a newer value queues a new write
            self.running_since = time.monotonic()
            try:
                await self._run(write.run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_storage_error(exc):
                    failures += 1
                    self._failed(exc, failures)
                    self.running_since = None
                    await asyncio.sleep(min(RETRY_FIRST_S * 2.0 ** (failures - 1), RETRY_MAX_S))
                    continue
                log.error("a %s write can never succeed; dropped", write.kind, exc_info=exc)
                outcome: Outcome = "error"
            else:
                outcome = "written"
                if self.error is not None:
                    log.warning("the store takes writes again after %.1fs (%d queued)",
                                time.monotonic() - (self.failing_since or 0.0),
                                len(self._queue) - 1)
                failures, self.error, self.failing_since = 0, None, None
            finally:
                self.running_since = None
            self._queue.popleft()
            self._dequeued(write)
            self._end(write, outcome)

    def _failed(self, exc: BaseException, failures: int) -> None:
        text = describe(exc)
        if self.error is None:
            self.failing_since = time.monotonic()
            log.warning("the store refuses writes (%s); %d queued, retrying", text,
                        len(self._queue))
        elif failures % 20 == 0:
            log.warning("the store still refuses writes (%s); %d queued", text, len(self._queue))
        self.error = text

    def _dequeued(self, write: _Write) -> None:
        self.queued[write.kind] -= 1
        self.queued_weight[write.kind] -= write.weight
        if write.key is not None and self._waiting.get(write.key) is write:
            del self._waiting[write.key]

    def _end(self, write: _Write, outcome: Outcome) -> None:
        if outcome == "written":
            self.written[write.kind] += write.weight
        else:
            self.dropped[write.kind, outcome] += write.weight
            if outcome == "full" and self.dropped[write.kind, outcome] in (1, 1000, 100_000):
                log.warning("write-behind holds %d %s writes, its bound: %d dropped so far",
                            self.queued[write.kind], write.kind,
                            self.dropped[write.kind, outcome])
        if not write.done.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed (a late close())
                write.done.set_result(outcome)

    @property
    def oldest_s(self) -> float:
        """Age of the oldest queued write, seconds (0 when none)."""
        return time.monotonic() - self._queue[0].queued_at if self._queue else 0.0
