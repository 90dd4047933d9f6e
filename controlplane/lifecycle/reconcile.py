"""Keeping the manager's states true to Triton's repository index.

Triton is the truth about what is loaded: a load that outlived our timeout and finished (or
failed) after all, models loaded or unloaded behind our back, a Triton that lost them. The
manager's own operations win while they run; everything idle takes Triton's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from controlplane.errors import ControlPlaneError
from controlplane.lifecycle.port import model_entries
from controlplane.lifecycle.states import Cause, ModelState, ready_versions, state_from_index
from controlplane.store.base import utcnow
from controlplane.triton.client import IndexEntry
from controlplane.types import ModelName

if TYPE_CHECKING:
    from controlplane.lifecycle.managed import ManagedModel
    from controlplane.lifecycle.manager import ModelManager

log = logging.getLogger(__name__)

#: a followed load or unload is polled after this many seconds, then ever more slowly
FOLLOW_FIRST_S = 0.5
FOLLOW_MAX_S = 5.0


class Reconciler:
    """Reconciles one manager's models with its Triton, and follows what Triton does alone."""

    def __init__(self, manager: ModelManager) -> None:
        self.m = manager
        #: a watcher per model whose load or unload Triton is doing without us
        self.followers: dict[ModelName, asyncio.Task[None]] = {}

    async def reconcile(self) -> dict[ModelName, tuple[ModelState, ModelState]]:
        """Align idle models with Triton's index; returns {model: (was, now)} for changes."""
        observed_at = utcnow()
        by_model: dict[ModelName, list[IndexEntry]] = {}
        for entry in await self.m.instance.index():
            by_model.setdefault(entry.name, []).append(entry)
        changes = {}
        for name, model in self.m._models.items():
            entries = by_model.get(name, [])
            seen, reason = state_from_index(entries)
            was = model.state
            if await self.adopt(model, seen, reason or f"found {seen} in Triton at reconcile",
                                observed_at, ready_versions(entries)):
                changes[name] = (was, seen)
                if seen in (ModelState.LOADING, ModelState.UNLOADING):
                    self.follow(name)
        if changes:
            log.info("reconciled with Triton: %s",
                     ", ".join(f"{n} {a}->{b}" for n, (a, b) in changes.items()))
        return changes

    async def adopt(self, model: ManagedModel, seen: ModelState, reason: str | None,
                    observed_at: datetime, versions: tuple[str, ...] = ()) -> bool:
        """Take Triton's view, observed at ``observed_at``, of a model we are not operating on
        (``versions``: those its index shows READY). Returns whether our state changed."""
        if model.busy or model.since > observed_at:
            return False  # an operation of ours is in flight, or changed the state since
        if seen == model.state:
            if seen is ModelState.READY:
                model.versions = versions  # not a transition: which versions serve changed
            if seen is ModelState.FAILED and model.timed_out and reason:
                # the load we gave up on failed in Triton after all: its reason says why
                await self.m._set(model, seen, f"{reason} (after our load timed out)",
                                  cause=Cause.ADOPT)
                return True
            return False
        if model.state is ModelState.FAILED and seen in (ModelState.COLD, ModelState.LOADING):
            # Triton forgets failures it did not record in the index; and a load of ours that
            # timed out goes on in Triton (LOADING): the failure, and the retry back-off of
            # lazy loads, stand until Triton settles it
            return False
        await self.m._set(model, seen, reason, cause=Cause.ADOPT, versions=versions)
        return True

    def follow(self, name: ModelName) -> None:
        """Watch a load or unload that Triton is doing without us (someone else started it, or
        ours timed out and Triton went on) until Triton settles it. No deadline of its own: a
        hung load is polled ever more slowly (at most every 5 s) for as long as Triton reports
        it; while an operation of ours runs on the model, its outcome is the one that counts."""
        if name in self.followers:
            return

        async def follow() -> None:
            pause = FOLLOW_FIRST_S
            model = self.m._models[name]
            while True:
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, FOLLOW_MAX_S)
                with contextlib.suppress(ControlPlaneError):
                    observed_at = utcnow()
                    entries = model_entries(await self.m.instance.index(), name)
                    seen, reason = state_from_index(entries)
                    if seen not in (ModelState.LOADING, ModelState.UNLOADING):
                        await self.adopt(model, seen, reason or f"{seen} in Triton after all",
                                         observed_at, ready_versions(entries))
                        return

        task = asyncio.create_task(follow(), name=f"follow-{name}")
        self.followers[name] = task
        task.add_done_callback(lambda _: self.followers.pop(name, None))
