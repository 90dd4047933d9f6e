"""Restores that failed for a reason not the model's, retried with back-off.

A restore (Triton back after a restart, or models it lost) that meets Triton's connection,
the store, or a bug of ours must not leave a pinned model cold for good: such models are
loaded again after 1, 2, 4 ... 30 s until each is ready or fails for a reason of its own.
Triton going down again ends the retries; the restore that follows its return takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from controlplane.errors import Conflict, ControlPlaneError, StoreUnavailable, TritonUnavailable

if TYPE_CHECKING:
    from controlplane.lifecycle.recovery import Recovery

log = logging.getLogger(__name__)

#: the first retry after this, doubled per try up to ``RETRY_MAX_S``
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


def failed_for_model(exc: BaseException) -> bool:
    """Whether a load failed for a reason of the model's (Triton refused it, it timed out, its
    config, the operator's hold), which a retry would not cure; False for Triton's connection,
    the store, or a bug of ours."""
    if isinstance(exc, Conflict):
        return True
    if not isinstance(exc, ControlPlaneError):
        return False
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return isinstance(cause, ControlPlaneError) and not isinstance(
        cause, TritonUnavailable | StoreUnavailable)


class RestoreRetry:
    """The retry task of one manager's recovery (``RecoveryState.retrying`` says what)."""

    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery
        self._task: asyncio.Task[None] | None = None
        #: passes run so far (tests, the log)
        self.passes = 0
        #: told after a restore or retry pass: what still fails and why (None: nothing): the
        #: loops registry (``/healthz`` degraded while a restore is being retried)
        self.on_pass: Callable[[str | None], None] | None = None

    def schedule(self, trigger: str) -> None:
        """Start retrying what ``retrying`` holds, unless already under way."""
        self._report()
        if self.recovery.state.retrying and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(trigger), name="restore-retry")

    def _report(self) -> None:
        retrying = self.recovery.state.retrying
        if self.on_pass is not None:
            self.on_pass("; ".join(f"{name}: {why}" for name, why in sorted(retrying.items()))
                         if retrying else None)

    async def _run(self, trigger: str) -> None:
        r, delay = self.recovery.state, RETRY_FIRST_S
        pinned = self.recovery.m.pinned
        while r.retrying and r.down_reason is None:
            log.warning("restore of %s retried in %.0fs", ", ".join(sorted(r.retrying)), delay)
            await asyncio.sleep(delay)
            first = [p for p in pinned if p in r.retrying]
            order = first + sorted(set(r.retrying) - set(first))
            r.last_restore.update(await self.recovery.restore(order, trigger=trigger))
            self.passes += 1
            self._report()
            delay = min(delay * 2, RETRY_MAX_S)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
