"""Background loops and their health: when each last ran, and its last error.

Every periodic task of the control plane (reconcile, warm-up drift, the scheduler's plan,
Triton's supervisor) reports here, so ``/healthz`` can say which one is failing and why
instead of the reason living only in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.store.base import utcnow

log = logging.getLogger(__name__)

#: an error kept for /healthz is cut to this many characters (tracebacks can be long)
MAX_ERROR_CHARS = 500
#: after a failed pass a loop runs again after ``min(interval, RETRY_FIRST_S)``, doubled per
#: failure in a row up to ``max(interval, RETRY_MAX_S)``: a loop with a long interval
#: (reconcile, drift) is back within seconds of its fault clearing, and a short one does
#: not retry a persistent fault many times a second
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0


def retry_delay(interval_s: float, failures: int) -> float:
    """Seconds before the next pass of a loop whose last ``failures`` passes failed."""
    if failures <= 0:
        return interval_s
    first = min(interval_s, RETRY_FIRST_S)
    return min(first * 2.0 ** min(failures - 1, 30), max(interval_s, RETRY_MAX_S))


@dataclass
class LoopStatus:
    name: str
    runs: int = 0
    errors: int = 0
    last_run: datetime | None = None
    last_ok: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    #: the loop's task ended on an unexpected exception: nothing runs it any more
    dead: bool = False
    #: failed passes in a row (0 after a success)
    failures: int = 0

    @property
    def failing(self) -> bool:
        """Its most recent run failed."""
        return self.last_error_at is not None and (
            self.last_ok is None or self.last_error_at >= self.last_ok)

    def as_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {"runs": self.runs, "errors": self.errors, "last_run": iso(self.last_run),
                "last_ok": iso(self.last_ok), "last_error": self.last_error,
                "last_error_at": iso(self.last_error_at), "failing": self.failing,
                "failures_in_a_row": self.failures, "dead": self.dead}


class Loops:
    """The registry: ``ok``/``failed`` after each run, or ``every`` to run one."""

    def __init__(self) -> None:
        self._status: dict[str, LoopStatus] = {}
        self._suffix = ""

    def scoped(self, instance: str) -> Loops:
        """The same registry, its loops named ``<loop>@<instance>``: each Triton instance of
        a fleet runs its own reconcile and supervisor, and ``/healthz`` tells them apart."""
        view = Loops()
        view._status, view._suffix = self._status, f"{self._suffix}@{instance}"
        return view

    def status(self, name: str) -> LoopStatus:
        name += self._suffix
        return self._status.setdefault(name, LoopStatus(name))

    def ok(self, name: str) -> None:
        s = self.status(name)
        s.runs += 1
        s.failures = 0
        s.last_run = s.last_ok = utcnow()

    def reporter(self, name: str) -> Callable[[BaseException | str | None], None]:
        """A pass's callback for a loop run elsewhere (the recorder's flush, a restore
        retry): None is a success of ``name``, an error its failure."""
        return lambda error: self.ok(name) if error is None else self.failed(name, error)

    def failed(self, name: str, error: BaseException | str) -> None:
        s = self.status(name)
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        s.runs += 1
        s.errors += 1
        s.failures += 1
        s.last_run = s.last_error_at = utcnow()
        s.last_error = text[:MAX_ERROR_CHARS]

    async def every(self, name: str, interval_s: float,
                    run: Callable[[], Awaitable[object]]) -> None:
        """Run ``run`` every ``interval_s`` (first after one interval), forever; an exception
        ends one pass, not the loop, and the next pass comes sooner or later by
        :func:`retry_delay`. Cancel the task to stop it."""
        status = self.status(name)
        try:
            while True:
                await asyncio.sleep(retry_delay(interval_s, status.failures))
                try:
                    await run()
                except Exception as exc:  # one bad pass must not end the loop
                    log.warning("%s%s failed: %s", name, self._suffix, exc,
                                exc_info=log.isEnabledFor(logging.DEBUG))
                    self.failed(name, exc)
                else:
                    self.ok(name)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.status(name).dead = True
            self.failed(name, exc)
            raise

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: s.as_dict() for name, s in sorted(self._status.items())}

    def dead(self) -> list[str]:
        return [name for name, s in self._status.items() if s.dead]
